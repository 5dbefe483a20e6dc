"""Deep3DFaceRecon's regressor behind Deep3D's own 5-point alignment: the expression network of the
FF++ metric presets (docs/evaluation.md).

``image [B,3,H,W] in [-1,1] -> coefficients [B,257]``, per image:

1. uint8 RGB: ``to_uint8="truncate"`` is ReliableSwap's ``((x + 1) * 127.5).astype(uint8)`` (it
   truncates, so after the dataset's ``ToTensor``/``Normalize`` PNG values 1..63 come back one
   lower); ``"round"`` rounds to the nearest value (the PNG's own bytes).
2. 5 points (x right, y down) from :class:`ipsb.data.deep3d_align.FivePoints`: points passed to
   :meth:`AlignedDeep3DRegressor.forward`, a landmarks file (keyed by the frame's own pixels, i.e.
   the image rounded back to uint8, whatever ``to_uint8`` is), dlib's 68 landmarks (run on the
   converted uint8 frame, as the reference runs its detector), or the fixed FFHQ points when no
   face is found.
3. Deep3D's ``align_img`` (:mod:`ipsb.data.deep3d_align`): ``y <- H-1-y`` in the points' dtype,
   POS fit to the 3D template ``lm3d`` (``similarity_Lm3D_all.mat``), PIL bicubic resize, 224 crop
   with zero padding.
4. ``crop / 255`` in float64, cast to float32, NCHW -> ReconNet (``epoch_20.pth``).

Steps 1-4 run per image in numpy/PIL on the CPU because the alignment must be PIL's bicubic to
match Deep3D; the network runs on the input's device. Not differentiable (evaluation only).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ipsb.backbone.interfaces import CoeffRegressor, freeze
from ipsb.backbone.recon import ReconNet, load_recon_net
from ipsb.checkpoints import MissingCheckpointError, resolve_checkpoint
from ipsb.data.deep3d_align import Deep3DAlignment, FivePoints, align_for_deep3d, image_key, load_lm3d

TO_UINT8 = ("truncate", "round")


def to_uint8_hwc(image: torch.Tensor, mode: str = "truncate") -> np.ndarray:
    """``[B,3,H,W]`` in [-1,1] -> uint8 ``[B,H,W,3]``.

    ``truncate``: ``((x + 1) * 127.5)`` cast to uint8 (ReliableSwap's conversion; values are clamped
    to [0,255] first, where the reference's cast of out-of-range pixels is undefined); ``round``:
    rounded to the nearest integer.
    """
    if mode not in TO_UINT8:
        raise ValueError(f"to_uint8 must be one of {TO_UINT8}, got {mode!r}")
    if image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"expected a float RGB image batch [B,3,H,W] in [-1,1], got {image.dtype} "
                         f"{list(image.shape)}")
    x = (image.detach().float() + 1.0) * 127.5
    if mode == "round":
        x = x.round()
    return x.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class AlignedDeep3DRegressor(CoeffRegressor):
    """Frozen Deep3D ReconNet on Deep3D-aligned crops; see the module docstring.

    Args:
        checkpoint: ``epoch_20.pth`` (registry name or path).
        lm3d: ``similarity_Lm3D_all.mat`` (name or path), or the 5-point template itself ``[5,3]``.
        detector: ``"dlib"`` (68 landmarks -> 5 points) or ``None`` (only given / file points).
        landmarks_file: optional file of 5 points per frame (:func:`ipsb.data.deep3d_align.write_landmarks_file`),
            consulted before the detector.
        no_face: ``"ffhq_points"`` (ReliableSwap's fallback) or ``"error"``.
        to_uint8: ``"truncate"`` (ReliableSwap) or ``"round"``.

    After each forward, :attr:`last_point_sources` says where each image's points came from
    (``given``, ``file``, ``dlib``, ``fallback``).
    """

    num_coeffs = 257

    def __init__(self, checkpoint: Union[str, os.PathLike] = "epoch_20.pth",
                 lm3d: Union[str, os.PathLike, Sequence] = "similarity_Lm3D_all.mat",
                 detector: Optional[str] = "dlib", landmarks_file: Optional[str] = None,
                 no_face: str = "ffhq_points", to_uint8: str = "truncate"):
        super().__init__()
        if to_uint8 not in TO_UINT8:
            raise ValueError(f"to_uint8 must be one of {TO_UINT8}, got {to_uint8!r}")
        self.to_uint8 = to_uint8
        files, missing = [], []
        for f in [checkpoint] + ([lm3d] if isinstance(lm3d, (str, os.PathLike)) else []):
            try:
                files.append(str(resolve_checkpoint(f)))
            except MissingCheckpointError as e:
                missing.append(str(e))
        if missing:
            raise MissingCheckpointError("\n  ".join(missing))
        self.net = load_recon_net(ReconNet(), files[0])
        if isinstance(lm3d, (str, os.PathLike)):
            self.lm3d = load_lm3d(files[1]).astype(np.float64)
        else:
            self.lm3d = np.asarray(lm3d, dtype=np.float64)
        if self.lm3d.shape != (5, 3):
            raise ValueError(f"lm3d must be the 5-point 3D template [5,3], got {self.lm3d.shape}")
        self.points = FivePoints(detector=detector, landmarks_file=landmarks_file, no_face=no_face)
        if landmarks_file is not None:
            files.append(str(landmarks_file))
        if detector == "dlib":
            files.append(_dlib_predictor_path())
        self.checkpoint_paths = files
        self.last_point_sources: list[str] = []
        freeze(self)

    def align(self, image: torch.Tensor, points: Optional[Sequence] = None) -> list[Deep3DAlignment]:
        """``[B,3,H,W]`` in [-1,1] (+ optional per-image ``[5,2]`` points, x right, y down) -> the
        224 aligned crops with their transform (:class:`~ipsb.data.deep3d_align.Deep3DAlignment`)."""
        rgb = to_uint8_hwc(image, self.to_uint8)
        if points is not None and len(points) != rgb.shape[0]:
            raise ValueError(f"got {len(points)} point sets for {rgb.shape[0]} images")
        # landmarks files are keyed on the frame's own pixels (rounding recovers them exactly)
        pixels = to_uint8_hwc(image, "round") if self.points.table and self.to_uint8 != "round" else rgb
        out, sources = [], []
        for i in range(rgb.shape[0]):
            given = None if points is None else _as_numpy(points[i])
            pts, src = self.points(rgb[i], given, key=image_key(pixels[i]) if self.points.table else None)
            sources.append(src)
            out.append(align_for_deep3d(rgb[i], pts, self.lm3d))
        self.last_point_sources = sources
        return out

    def forward(self, image: torch.Tensor, points: Optional[Sequence] = None) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> ``[B,257]`` coefficients (see :meth:`align` for ``points``)."""
        crops = np.stack([a.image for a in self.align(image, points)])
        x = torch.from_numpy((crops / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
        return self.net(x.to(image.device))

    def train(self, mode: bool = True):
        """Stays in eval mode (frozen BatchNorm statistics) whatever the caller's ``train()`` says."""
        return super().train(False)


def _as_numpy(points) -> np.ndarray:
    return points.detach().cpu().numpy() if torch.is_tensor(points) else np.asarray(points)


def _dlib_predictor_path() -> str:
    try:
        import face_recognition_models
    except ImportError as e:
        raise ImportError("the Deep3D alignment's dlib landmarks need the align extra: pip install 'ipsb[align]'"
                          ) from e
    return str(face_recognition_models.pose_predictor_model_location())
