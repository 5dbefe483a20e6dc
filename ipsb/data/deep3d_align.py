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

Where the 5 points come from (:class:`FivePoints`), in this order: points the caller passes, a
landmarks file (:func:`write_landmarks_file`: points per image, keyed by :func:`image_key`), dlib's
68 landmarks reduced by :func:`extract_5p`, and, when no face is found, the fixed FFHQ points
:data:`FFHQ_LM5_256` that ReliableSwap's Deep3D wrapper falls back to.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
    from ipsb.checkpoints import WrongCheckpointKindError, load_mat_file

    raw = load_mat_file(path, "the 3D landmark template (similarity_Lm3D_all.mat)")
    lm = raw.get("lm")
    if not isinstance(lm, np.ndarray) or lm.ndim != 2 or lm.shape[0] != 68:
        raise WrongCheckpointKindError(f"'{path}' has no 68-point template under key 'lm' (expected Deep3DFaceRecon's "
                                       f"BFM/similarity_Lm3D_all.mat)")
    return extract_5p(lm)


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
    the crop; ``trans_params`` = (w0, h0, s, tx, ty) floats (Deep3D's order); ``crop_box`` = (w, h,
    left, up): the bicubic resize size and the crop's top-left corner in the resized image."""

    image: np.ndarray
    landmarks: np.ndarray
    trans_params: tuple[float, float, float, float, float]
    crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)


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
    return Deep3DAlignment(crop, lm_new, (float(w0), float(h0), float(s), float(t[0]), float(t[1])),
                           (w, h, left, up))


def align_for_deep3d(image: np.ndarray, landmarks_image: np.ndarray, lm3d: np.ndarray,
                     target_size: int = 224, rescale_factor: float = 102.0) -> Deep3DAlignment:
    """Like :func:`align_img` but with landmarks in image coordinates (y down, e.g. from dlib);
    flips them with ``H-1-y`` first, as Deep3D's ``test.py`` does, in the points' own float dtype
    (float32 for integer points, as Deep3D reads its detection files)."""
    lm = np.array(landmarks_image, copy=True)
    if not np.issubdtype(lm.dtype, np.floating):
        lm = lm.astype(np.float32)
    lm[:, 1] = np.asarray(image).shape[0] - 1 - lm[:, 1]
    return align_img(image, lm, lm3d, target_size, rescale_factor)


#: The fixed 5 points (x right, y down) ReliableSwap's Deep3D wrapper uses when its detector finds no
#: face in a 256 px frame: FFHQ's 512 px template halved (left eye, right eye, nose, left and right
#: mouth corner). Float64, as the reference holds them.
FFHQ_LM5_256 = np.array([[96.490690, 119.973540], [159.451385, 120.096800], [128.317080, 157.009675],
                         [100.630585, 185.705215], [156.544525, 185.575590]], dtype=np.float64)


def ffhq_fallback_points(height: int, width: int) -> np.ndarray:
    """:data:`FFHQ_LM5_256` scaled to an ``height`` x ``width`` frame (unchanged at 256x256), float64."""
    if (height, width) == (256, 256):
        return FFHQ_LM5_256.copy()
    return FFHQ_LM5_256 * np.array([width / 256.0, height / 256.0])


def image_key(rgb: np.ndarray) -> str:
    """sha256 of a uint8 ``[H,W,3]`` image's shape and bytes: the key of a landmarks file entry."""
    rgb = np.ascontiguousarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H,W,3], got {rgb.dtype} {rgb.shape}")
    h = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


LANDMARKS_FORMAT = "ipsb-deep3d-5points-v1"


def write_landmarks_file(path: str | os.PathLike, points: dict[str, np.ndarray]) -> Path:
    """Write ``{image_key: [5,2] points (x right, y down, pixels)}`` as a landmarks file (JSON).

    Each point array keeps its dtype name (float32 or float64): the y flip happens in that dtype, as
    in the reference (detector points are float32, the fallback float64).
    """
    entries = {}
    for key, pts in points.items():
        a = np.asarray(pts)
        if a.shape != (5, 2) or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"landmarks for {key[:12]}... must be a float32/float64 [5,2] array, got "
                             f"{a.dtype} {a.shape}")
        entries[key] = {"dtype": str(a.dtype), "points": a.astype(np.float64).tolist()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": LANDMARKS_FORMAT, "convention": "x right, y down, pixels",
                                "images": entries}, indent=0, sort_keys=True))
    return path


def read_landmarks_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A file written by :func:`write_landmarks_file` -> ``{image_key: [5,2] points}`` (clear errors)."""
    try:
        raw = json.loads(Path(path).read_text())
        if raw.get("format") != LANDMARKS_FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {LANDMARKS_FORMAT!r}")
        out = {}
        for key, e in raw["images"].items():
            if e["dtype"] not in ("float32", "float64"):
                raise ValueError(f"dtype {e['dtype']!r} of entry {key[:12]}... is not float32/float64")
            a = np.asarray(e["points"], dtype=np.float64).astype(e["dtype"])
            if a.shape != (5, 2):
                raise ValueError(f"entry {key[:12]}... holds {a.shape} points, expected [5,2]")
            out[key] = a
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"cannot read the Deep3D landmarks file '{path}': {e}; write it with "
                         f"ipsb.data.deep3d_align.write_landmarks_file") from e
    return out


class FivePoints:
    """The 5 points (x right, y down) of a uint8 RGB frame for Deep3D's alignment.

    Sources, in order: ``points`` passed to :meth:`__call__`; the ``landmarks_file`` entry of the
    frame (:func:`image_key`); ``detector="dlib"``: dlib's 68 landmarks (:class:`ipsb.data.align.FaceAligner`,
    most confident face) reduced by :func:`extract_5p`; no face: ``no_face="ffhq_points"`` gives
    :func:`ffhq_fallback_points`, ``"error"`` raises :class:`ipsb.data.align.NoFaceError`.
    :meth:`__call__` returns ``(points [5,2], source)`` with source one of ``given``, ``file``,
    ``dlib``, ``fallback``.
    """

    SOURCES = ("given", "file", "dlib", "fallback")

    def __init__(self, detector: Optional[str] = "dlib", landmarks_file: Optional[str | os.PathLike] = None,
                 no_face: str = "ffhq_points"):
        if detector not in (None, "dlib"):
            raise ValueError(f"detector must be 'dlib' or None, got {detector!r}")
        if no_face not in ("ffhq_points", "error"):
            raise ValueError(f"no_face must be 'ffhq_points' or 'error', got {no_face!r}")
        self.detector, self.no_face = detector, no_face
        self.landmarks_file = None if landmarks_file is None else str(landmarks_file)
        self.table = {} if landmarks_file is None else read_landmarks_file(landmarks_file)
        self._aligner = None

    def dlib_points(self, rgb: np.ndarray) -> np.ndarray:
        """dlib's 68 landmarks of the most confident face -> 5 points float32; NoFaceError if none."""
        if self._aligner is None:
            from ipsb.data.align import FaceAligner

            self._aligner = FaceAligner()
        return extract_5p(self._aligner.detect(rgb).numpy())

    def __call__(self, rgb: np.ndarray, points: Optional[np.ndarray] = None,
                 key: Optional[str] = None) -> tuple[np.ndarray, str]:
        """``rgb`` uint8 ``[H,W,3]`` (what the detector sees); ``key``: its landmarks-file key when the
        file was keyed on other pixels (default :func:`image_key` of ``rgb``)."""
        if points is not None:
            pts = np.asarray(points)
            if pts.shape != (5, 2):
                raise ValueError(f"expected 5 points [5,2] (x right, y down), got {pts.shape}")
            return pts, "given"
        if self.table:
            hit = self.table.get(key or image_key(rgb))
            if hit is not None:
                return hit, "file"
        if self.detector == "dlib":
            from ipsb.data.align import NoFaceError

            try:
                return self.dlib_points(rgb), "dlib"
            except NoFaceError:
                pass
        if self.no_face == "error":
            from ipsb.data.align import NoFaceError

            where = "" if self.detector else f" (no detector and no entry in {self.landmarks_file})"
            raise NoFaceError(f"no 5 points for a {rgb.shape[1]}x{rgb.shape[0]} frame{where}")
        return ffhq_fallback_points(*rgb.shape[:2]), "fallback"
