"""The 5-landmark alignment Deep3DFaceRecon's regressor expects (``util/preprocess.align_img``).

Steps (target 224, rescale factor 102): five points (eye centres, nose tip, mouth corners) are fitted
to the 3D template ``lm3d`` (5x3, from ``BFM/similarity_Lm3D_all.mat``) by a least-squares affine
camera (POS) giving a translation ``t`` and scale; ``s = 102/scale``; the image is resized by ``s``
with PIL **bicubic** and cropped to a 224 box around ``t`` (zero padding outside), and the landmarks
follow. Landmarks in this module use Deep3D's **y-up** convention (``y_up = H-1-row``) except where a
name says ``image``: :func:`align_for_deep3d` takes dlib-style image landmarks and does the flip.

This runs in numpy + PIL on uint8 images on purpose: Deep3D's own preprocessing resizes with PIL's
bicubic filter, and the parity fixture pins its exact pixels (kornia/torch bicubic differ).
``trans_params`` are plain floats (the reference builds a ragged numpy array that newer numpy refuses).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: 1-based indices of the 68-point layout used for the 5 points: nose, eye corners, mouth corners.
_LM5_SOURCE = np.array([31, 37, 40, 43, 46, 49, 55]) - 1


def extract_5p(lm68: np.ndarray) -> np.ndarray:
    """``[68,D]`` -> ``[5,D]``: left eye, right eye (corner means), nose tip, left/right mouth corner.

    Averages in the input dtype (float32 landmarks as Deep3D reads them).
    """
    lm68 = np.asarray(lm68)
    if lm68.ndim != 2 or lm68.shape[0] != 68:
        raise ValueError(f"expected 68 landmarks [68,D], got shape {lm68.shape}")
    i = _LM5_SOURCE
    return np.stack([np.mean(lm68[i[[1, 2]]], 0), np.mean(lm68[i[[3, 4]]], 0), lm68[i[0]], lm68[i[5]], lm68[i[6]]], 0)


def load_lm3d(path: str | os.PathLike) -> np.ndarray:
    """``similarity_Lm3D_all.mat`` (key ``lm``, 68x3) -> the 5-point template ``[5,3]``."""
    import scipy.io

    raw = scipy.io.loadmat(str(path))
    if "lm" not in raw:
        raise ValueError(f"'{path}' has no key 'lm' (expected Deep3DFaceRecon's BFM/similarity_Lm3D_all.mat)")
    return extract_5p(raw["lm"])


def pos(lm2d: np.ndarray, lm3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine camera from 3D points ``[N,3]`` to 2D points ``[N,2]`` -> (t ``[2]``, scale).

    Solves ``[x y z 1] k = u`` and ``[x y z 1] k' = v`` jointly in float64; scale = mean norm of the
    two rotation rows, t = the two offsets.
    """
    lm2d = np.asarray(lm2d, dtype=np.float64)
    lm3d = np.asarray(lm3d, dtype=np.float64)
    n = lm2d.shape[0]
    if lm3d.shape != (n, 3) or lm2d.shape != (n, 2):
        raise ValueError(f"need matching [N,2] and [N,3] points, got {lm2d.shape} and {lm3d.shape}")
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = lm3d
    a[0::2, 3] = 1
    a[1::2, 4:7] = lm3d
    a[1::2, 7] = 1
    k = np.linalg.lstsq(a, lm2d.reshape(-1), rcond=None)[0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


@dataclass
class Deep3DAlignment:
    """Result of :func:`align_img`: ``image`` uint8 ``[S,S,3]``; ``landmarks`` float64 ``[N,2]`` y-up in
    the crop; ``trans_params`` = (w0, h0, s, tx, ty) floats (Deep3D's order)."""

    image: np.ndarray
    landmarks: np.ndarray
    trans_params: tuple[float, float, float, float, float]


def align_img(image: np.ndarray, lm_y_up: np.ndarray, lm3d: np.ndarray, target_size: int = 224,
              rescale_factor: float = 102.0) -> Deep3DAlignment:
    """Deep3D's ``align_img``: uint8 RGB ``[H,W,3]``, landmarks ``[5|68,2]`` (y up), template ``[5,3]``."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H,W,3], got {image.dtype} {image.shape}")
    lm = np.asarray(lm_y_up)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] not in (5, 68):
        raise ValueError(f"expected 5 or 68 landmarks [N,2], got {lm.shape}")
    h0, w0 = image.shape[:2]
    lm5 = lm if lm.shape[0] == 5 else extract_5p(lm)
    t, scale = pos(lm5, np.asarray(lm3d))
    s = rescale_factor / scale
    w, h = int(np.int32(w0 * s)), int(np.int32(h0 * s))
    left = int(np.int32(w / 2 - target_size / 2 + (t[0] - w0 / 2) * s))
    up = int(np.int32(h / 2 - target_size / 2 + (h0 / 2 - t[1]) * s))
    pil = Image.fromarray(image).resize((w, h), resample=Image.BICUBIC)
    crop = np.asarray(pil.crop((left, up, left + target_size, up + target_size)))
    lm_new = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], 1) * s
    lm_new = lm_new - np.array([[w / 2 - target_size / 2, h / 2 - target_size / 2]])
    return Deep3DAlignment(crop, lm_new, (float(w0), float(h0), float(s), float(t[0]), float(t[1])))


def align_for_deep3d(image: np.ndarray, landmarks_image: np.ndarray, lm3d: np.ndarray,
                     target_size: int = 224, rescale_factor: float = 102.0) -> Deep3DAlignment:
    """Like :func:`align_img` but with landmarks in image coordinates (y down, e.g. from dlib);
    flips them with ``H-1-y`` in float32 first, as Deep3D's ``test.py`` does."""
    lm = np.asarray(landmarks_image, dtype=np.float32).copy()
    lm[:, 1] = np.asarray(image).shape[0] - 1 - lm[:, 1]
    return align_img(image, lm, lm3d, target_size, rescale_factor)
