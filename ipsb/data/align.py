"""Real-photo face alignment: dlib detection + 68 landmarks, the FFHQ crop, and pasting results back.

``FaceAligner.align(image)`` -> :class:`AlignedFace` (the FFHQ-aligned crop in [-1,1], the
original->crop matrix, the quad and the landmarks); :func:`paste_back` warps a processed crop back
into the original frame through a feathered mask, leaving every pixel outside the pasted region
bit-identical. The crop is the FFHQ dataset's recipe (:func:`ipsb.data.ffhq_alignment.ffhq_crop`:
antialiased shrink, crop, blurred padding, supersampled bilinear quad transform, Lanczos resize); the
paste back is a differentiable kornia warp by the inverse matrix.

dlib (``dlib-bin``) and its models (``face-recognition-models``: the HOG frontal face detector is in
dlib itself, the 68-point shape predictor ships in that package, so nothing is downloaded) are the
optional extra ``ipsb[align]`` and are imported only when a face is first detected. Images of any
common kind (grayscale, RGBA, 16-bit, float in [0,1], PIL) are converted to uint8 RGB first
(:func:`ipsb.data.image_reader.to_rgb_uint8`); files are read with
:func:`ipsb.data.image_reader.read_rgb`. With several detections the most confident one (dlib's
detection score) is kept by default, or the largest box with ``select="largest"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ipsb.data import ffhq_alignment as fa
from ipsb.data.image_reader import image_to_tensor, to_rgb_uint8

__all__ = ["AlignedFace", "FaceAligner", "NoFaceError", "image_to_tensor", "paste_back", "to_rgb_uint8"]

#: predictor path -> (detector, shape predictor), shared by all FaceAligner instances.
_DLIB_MODELS: dict[str, tuple] = {}


class NoFaceError(ValueError):
    """No face was detected in an image; the message names the image."""


@dataclass
class AlignedFace:
    """An FFHQ-aligned face.

    image ``[3,S,S]`` float32 in [-1,1]; matrix ``[3,3]`` float64 original pixel-index coords -> crop
    pixel-index coords; quad ``[4,2]`` float64 (TL, BL, BR, TR) in original pixels, the region the
    crop shows (FFHQ's quad of the landmarks; moved by a fraction of a pixel when the recipe
    pre-shrinks a large face, see :func:`ipsb.data.ffhq_alignment.ffhq_crop`); landmarks ``[68,2]``
    float32 in original pixels (x, y).
    """

    image: torch.Tensor
    matrix: torch.Tensor
    quad: torch.Tensor
    landmarks: torch.Tensor


class Aligner:
    """What every aligner does: ``align(image uint8 [H,W,3], name=None) -> AlignedFace``.

    :class:`FaceAligner` (dlib + the FFHQ recipe) and the aligners for pre-aligned frames in
    :mod:`ipsb.data.simple_aligners` derive from it, so a config may name any of them where an
    ``Aligner`` is expected (and nothing else).
    """

    def align(self, image, name: Optional[str] = None) -> AlignedFace:
        raise NotImplementedError


class FaceAligner(Aligner):
    """dlib face detection + 68 landmarks + the FFHQ crop.

    Args:
        output_size: side S of the aligned crop (256 for the swap pipeline, 1024 for FFHQ).
        select: ``"score"`` (dlib's most confident detection) or ``"largest"`` (biggest box).
        transform_size: side of the supersampled quad transform, Lanczos-resized to ``output_size``;
            default ``4 * output_size`` (FFHQ's 4096 for its 1024 crops; for a 256 crop, 1024 instead
            of the recipe's fixed 4096 is 16x cheaper, and 56-57 dB PSNR from it on the test photos).
        upsample: dlib detector upsampling passes (1 finds faces down to ~40 px).
        enable_padding: the recipe's blurred reflect padding where the crop leaves the photo
            (False: black there).
        predictor_path: 68-point shape predictor ``.dat``; default: face_recognition_models' file.
    """

    def __init__(self, output_size: int = 256, select: str = "score", transform_size: Optional[int] = None,
                 upsample: int = 1, enable_padding: bool = True, predictor_path: Optional[str] = None):
        if select not in ("score", "largest"):
            raise ValueError(f"select must be 'score' or 'largest', got {select!r}")
        if output_size < 8:
            raise ValueError(f"output_size must be >= 8, got {output_size}")
        self.output_size = int(output_size)
        self.transform_size = max(int(transform_size or 4 * output_size), self.output_size)
        self.select = select
        self.upsample = int(upsample)
        self.enable_padding = bool(enable_padding)
        self.predictor_path = predictor_path
        self._detector = self._predictor = None

    def _models(self):
        if self._detector is None:
            try:
                import dlib
            except ImportError as e:
                raise ImportError("face alignment needs dlib: pip install 'ipsb[align]' "
                                  "(dlib-bin, face-recognition-models, setuptools<81)") from e
            path = self.predictor_path
            if path is None:
                try:
                    import face_recognition_models
                except ImportError as e:
                    raise ImportError("the 68-landmark model comes from face-recognition-models: "
                                      "pip install 'ipsb[align]'") from e
                path = face_recognition_models.pose_predictor_model_location()
            if str(path) not in _DLIB_MODELS:  # the predictor is a 100 MB file: load it once per process
                _DLIB_MODELS[str(path)] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path)))
            self._detector, self._predictor = _DLIB_MODELS[str(path)]
        return self._detector, self._predictor

    def detections(self, image) -> list[tuple[tuple[int, int, int, int], float]]:
        """All dlib detections: ``[((left, top, right, bottom), score), ...]`` in dlib's order."""
        detector, _ = self._models()
        rects, scores, _ = detector.run(to_rgb_uint8(image), self.upsample, 0.0)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]

    def detect(self, image, name: Optional[str] = None) -> torch.Tensor:
        """Image -> 68 landmarks ``[68,2]`` float32 (x, y pixels) of the selected face; NoFaceError if none."""
        import dlib

        rgb = to_rgb_uint8(image)
        detector, predictor = self._models()
        rects, scores, _ = detector.run(rgb, self.upsample, 0.0)
        if len(rects) == 0:
            what = name or f"the {rgb.shape[1]}x{rgb.shape[0]} image"
            raise NoFaceError(f"no face found in {what} (dlib frontal face detector, upsample={self.upsample})")
        if self.select == "score":
            best = max(range(len(rects)), key=lambda i: scores[i])
        else:
            best = max(range(len(rects)), key=lambda i: rects[i].width() * rects[i].height())
        r = rects[best]
        shape = predictor(rgb, dlib.rectangle(r.left(), r.top(), r.right(), r.bottom()))
        return torch.tensor([[p.x, p.y] for p in shape.parts()], dtype=torch.float32)

    def align_landmarks(self, image, landmarks) -> AlignedFace:
        """FFHQ-align ``image`` with given 68 landmarks ``[68,2]`` (x, y pixels; no detection)."""
        rgb = to_rgb_uint8(image)
        lms = torch.as_tensor(landmarks, dtype=torch.float32)
        quad = fa.ffhq_quad(lms)
        crop, matrix, shown = fa.ffhq_crop(rgb, quad, self.output_size, self.transform_size, self.enable_padding)
        return AlignedFace(image=image_to_tensor(crop), matrix=matrix, quad=shown, landmarks=lms)

    def align(self, image, name: Optional[str] = None) -> AlignedFace:
        """Detect the face and FFHQ-align it: -> :class:`AlignedFace` (NoFaceError naming ``name``)."""
        rgb = to_rgb_uint8(image)
        return self.align_landmarks(rgb, self.detect(rgb, name=name))


def paste_back(original, aligned: torch.Tensor, matrix: torch.Tensor, feather: Optional[float] = None,
               mode: str = "bicubic"):
    """Warp a processed crop back into the original frame through a feathered mask.

    Args:
        original: float ``[3,H,W]`` in [-1,1] (torch) or uint8 ``[H,W,3]`` (numpy or torch).
        aligned: the crop ``[3,S,S]`` in [-1,1] (e.g. a swap result of ``AlignedFace.image``).
        matrix: ``AlignedFace.matrix`` ``[3,3]`` (original -> crop).
        feather: width in crop pixels of the linear ramp at the crop border (default S/16).
        mode: kornia sampling of the crop (``bicubic`` or ``bilinear``); the mask is always bilinear.

    Returns the composite in the type/layout of ``original``; pixels where the warped mask is 0
    (everything outside the crop's quad) are bit-identical to ``original``.
    """
    if aligned.dim() != 3 or aligned.shape[0] != 3 or aligned.shape[1] != aligned.shape[2]:
        raise ValueError(f"aligned must be a square crop [3,S,S] in [-1,1], got {list(aligned.shape)}")
    is_uint8 = not (isinstance(original, torch.Tensor) and original.is_floating_point())
    if is_uint8:
        rgb = np.asarray(original.cpu() if isinstance(original, torch.Tensor) else original)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"original must be float [3,H,W] in [-1,1] or uint8 [H,W,3], got "
                             f"{rgb.dtype} {rgb.shape}")
        base = image_to_tensor(rgb).to(aligned.device)
    else:
        if original.dim() != 3 or original.shape[0] != 3:
            raise ValueError(f"original must be float [3,H,W] in [-1,1], got {list(original.shape)}")
        base = original
    h, w = base.shape[-2:]
    s = aligned.shape[-1]
    inv = torch.linalg.inv(matrix.to(torch.float64))
    mask = fa.feather_mask(s, s / 16 if feather is None else feather, dtype=aligned.dtype, device=aligned.device)
    face = fa.warp(aligned[None], inv, (h, w), mode=mode, padding_mode="border")[0].clamp(-1, 1).to(base.dtype)
    m = fa.warp(mask, inv, (h, w), mode="bilinear", padding_mode="zeros")[0].clamp(0, 1).to(base.dtype)
    blended = m * face + (1 - m) * base
    inside = m > 0
    if not is_uint8:
        return torch.where(inside, blended, base)
    out = rgb.copy()
    vals = ((blended.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    sel = inside[0].cpu().numpy()
    out[sel] = vals[sel]
    return torch.from_numpy(out) if isinstance(original, torch.Tensor) else out
