"""dlib's ResNet face descriptor as an :class:`IdentityEncoder` (a registry-shipped alternative).

Why: the official identity networks (CosFace sphere20, ArcFace) need checkpoint files that cannot be
downloaded here; ``face-recognition-models`` (PyPI) ships dlib's 29-layer ResNet face recognition
model (``dlib_face_recognition_resnet_model_v1.dat``, 128-d descriptors, LFW 99.38% per dlib) and the
5-point shape predictor, which ``dlib-bin`` runs. A config selects it explicitly
(``class_path: ipsb.backbone.dlib_identity.DlibResNetIdentity``); numbers computed with it are *not*
comparable with CosFace/ArcFace numbers in papers.

Pipeline per image: [-1,1] float -> uint8 RGB; face box = dlib's HOG detector's most confident
detection, or (``box="center"``, or when nothing is detected and ``fallback_center``) the central
``center_fraction`` square, which suits FFHQ-aligned crops; 5 landmarks by the shape predictor;
``compute_face_descriptor`` (dlib's own 150 px chip alignment, ``jitter`` re-samplings) -> 128-d,
L2-normalised here (dlib compares raw descriptors by Euclidean distance, 0.6 threshold).

Metric-only: it runs dlib on CPU through numpy, so it has no gradients and is not compatible with
torch.func; never use it inside a loss. Output ``[B,128]`` float32 on the input's device.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ipsb.backbone.interfaces import IdentityEncoder
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError


def _model_paths(recognition_path: Optional[str], predictor_path: Optional[str]) -> tuple[str, str]:
    if recognition_path and predictor_path:
        return recognition_path, predictor_path
    try:
        import face_recognition_models as frm
    except ImportError as e:
        raise MissingCheckpointError(
            "dlib identity: the package face-recognition-models (with dlib-bin, the ipsb[align] extra) is not "
            "installed and no model paths were given") from e
    return (recognition_path or frm.face_recognition_model_location(),
            predictor_path or frm.pose_predictor_five_point_model_location())


class DlibResNetIdentity(IdentityEncoder):
    """Aligned face ``[B,3,H,W]`` in [-1,1] -> L2-normalised dlib descriptor ``[B,128]``."""

    def __init__(self, box: str = "detect", fallback_center: bool = True, center_fraction: float = 0.6,
                 jitter: int = 0, recognition_path: Optional[str] = None, predictor_path: Optional[str] = None):
        super().__init__()
        if box not in ("detect", "center"):
            raise ValueError(f"box must be 'detect' or 'center', got {box!r}")
        import dlib

        rec, pred = _model_paths(recognition_path, predictor_path)
        try:
            self._rec = dlib.face_recognition_model_v1(rec)
            self._pred = dlib.shape_predictor(pred)
        except RuntimeError as e:
            raise CorruptCheckpointError(f"dlib could not load '{rec}' / '{pred}': {e}") from e
        self._det = dlib.get_frontal_face_detector() if box == "detect" else None
        self.box, self.fallback_center, self.center_fraction, self.jitter = box, fallback_center, center_fraction, jitter

    def _rect(self, rgb: np.ndarray, i: int):
        import dlib

        if self._det is not None:
            dets, scores, _ = self._det.run(rgb, 1, 0.0)
            if len(dets):
                return dets[int(np.argmax(scores))]
            if not self.fallback_center:
                raise ValueError(f"DlibResNetIdentity: no face detected in image {i} of the batch "
                                 f"(set fallback_center=True or box='center' for aligned crops)")
        h, w = rgb.shape[:2]
        side = self.center_fraction * min(h, w)
        x0, y0 = (w - side) / 2, (h - side) / 2
        return dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side)))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"DlibResNetIdentity: expected images [B,3,H,W] in [-1,1], got {list(images.shape)}")
        u8 = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out = []
        for i, img in enumerate(u8.permute(0, 2, 3, 1).cpu().numpy()):
            rgb = np.ascontiguousarray(img)
            shape = self._pred(rgb, self._rect(rgb, i))
            out.append(np.array(self._rec.compute_face_descriptor(rgb, shape, self.jitter), dtype=np.float32))
        return F.normalize(torch.from_numpy(np.stack(out)), dim=1).to(images.device)
