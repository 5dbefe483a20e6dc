"""Real-photo face alignment: dlib detection + 68 landmarks, FFHQ crop, and pasting results back.

``FaceAligner.align(image)`` -> :class:`AlignedFace` (the FFHQ-aligned crop in [-1,1], the
original->crop matrix, the quad and the landmarks); :func:`paste_back` warps a processed crop back
into the original frame through a feathered mask, leaving every pixel outside the pasted region
bit-identical. The warp math lives in :mod:`ipsb.data.ffhq_alignment`.

dlib (``dlib-bin``) and its models (``face-recognition-models``: the HOG frontal face detector is in
dlib itself, the 68-point shape predictor ships in that package) are the optional extra
``ipsb[align]`` and are imported only when a face is first detected. Images of any common kind
(grayscale, RGBA, 16-bit, float in [0,1], PIL) are converted to uint8 RGB first (:func:`to_rgb_uint8`).
With several detections the most confident one (dlib's detection score) is kept by default, or the
largest box with ``select="largest"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ipsb.data import ffhq_alignment as fa


#: predictor path -> (detector, shape predictor), shared by all FaceAligner instances.
_DLIB_MODELS: dict[str, tuple] = {}


class NoFaceError(ValueError):
    """No face was detected in an image; the message names the image."""


def to_rgb_uint8(image) -> np.ndarray:
    """Any image -> uint8 RGB ``[H,W,3]``.

    Accepts numpy arrays / PIL images (HW gray, HW1, HW2 gray+alpha, HW3 RGB, HW4 RGBA; uint8, 16-bit
    (scaled by 1/257), bool, or float in [0,1]) and torch tensors (uint8 HWC, or float CHW in [-1,1],
    ipsb's convention). Alpha is dropped.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point():
            if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
                raise ValueError(f"a float tensor image must be [C,H,W] in [-1,1], got {list(t.shape)}")
            t = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        image = t.numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise ValueError(f"expected an image [H,W], [H,W,1|2|3|4], got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
            raise ValueError(f"a float image must hold values in [0,1], got range "
                             f"[{np.nanmin(a)}, {np.nanmax(a)}]")
        a = np.round(a * 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"integer image values must be in 0..65535, got {lo}..{hi}")
        a = a.astype(np.uint8) if a.dtype.itemsize == 1 else np.round(a / 257.0).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    elif a.shape[2] == 2:
        a = np.repeat(a[..., :1], 3, 2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    return np.ascontiguousarray(a)


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H,W,3]`` -> float32 ``[3,H,W]`` in [-1,1]."""
    rgb = rgb if rgb.flags.writeable else rgb.copy()  # e.g. np.asarray(PIL image) is read-only
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1


@dataclass
class AlignedFace:
    """An FFHQ-aligned face.

    image ``[3,S,S]`` float32 in [-1,1]; matrix ``[3,3]`` float64 original pixel-index coords -> crop
    pixel-index coords; quad ``[4,2]`` float64 (TL, BL, BR, TR) in original pixels; landmarks
    ``[68,2]`` float32 in original pixels (x, y).
    """

    image: torch.Tensor
    matrix: torch.Tensor
    quad: torch.Tensor
    landmarks: torch.Tensor


class FaceAligner:
    """dlib face detection + 68 landmarks + FFHQ alignment.

    Args:
        output_size: side S of the aligned crop (256 for the swap pipeline, 1024 for FFHQ).
        select: ``"score"`` (dlib's most confident detection) or ``"largest"`` (biggest box).
        transform_size: size of the intermediate warp, resized (antialiased) to ``output_size``
            (FFHQ uses 4096); default = ``output_size``. Faces much larger than it are pre-shrunk by
            FFHQ's integer factor first, so downscaling does not alias.
        upsample: dlib detector upsampling passes (1 finds faces down to ~40 px).
        mode, padding_mode: kornia sampling (``bicubic``: the crop -> paste round trip stays
            within 0.5/255 on the astronaut photo, bilinear blurs it to ~2/255) and border
            handling (``reflection``, like FFHQ's reflect padding; ``zeros`` for black borders).
        predictor_path: 68-point shape predictor ``.dat``; default: face_recognition_models' file.
    """

    def __init__(self, output_size: int = 256, select: str = "score", transform_size: Optional[int] = None,
                 upsample: int = 1, mode: str = "bicubic", padding_mode: str = "reflection",
                 predictor_path: Optional[str] = None):
        if select not in ("score", "largest"):
            raise ValueError(f"select must be 'score' or 'largest', got {select!r}")
        if output_size < 8:
            raise ValueError(f"output_size must be >= 8, got {output_size}")
        self.output_size = int(output_size)
        self.transform_size = int(transform_size or output_size)
        self.select = select
        self.upsample = int(upsample)
        self.mode = mode
        self.padding_mode = padding_mode
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
        """FFHQ-align ``image`` with given 68 landmarks (no detection)."""
        rgb = to_rgb_uint8(image)
        lms = torch.as_tensor(landmarks, dtype=torch.float32)
        quad = fa.ffhq_quad(lms)
        src = image_to_tensor(rgb)[None]
        h, w = rgb.shape[:2]
        pre = torch.eye(3, dtype=torch.float64)
        shrink = fa.shrink_factor(quad, self.transform_size)
        if shrink > 1:
            small = (max(1, round(h / shrink)), max(1, round(w / shrink)))
            pre = fa.resize_matrix((h, w), small)
            src = fa.resize(src, small)
        t = self.transform_size
        src_to_t = fa.quad_to_matrix(fa.apply_matrix(pre, quad), t)  # (shrunk) source -> transform crop
        crop = fa.warp(src, src_to_t, (t, t), mode=self.mode, padding_mode=self.padding_mode)
        to_t = src_to_t @ pre
        s = self.output_size
        matrix = fa.resize_matrix((t, t), (s, s)) @ to_t
        crop = fa.resize(crop, (s, s)).clamp(-1, 1)
        return AlignedFace(image=crop[0], matrix=matrix, quad=quad, landmarks=lms)

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
