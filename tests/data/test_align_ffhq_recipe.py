"""ipsb's default 256 crop against the FFHQ recipe written here in plain PIL/numpy/scipy.

The reference below follows ffhq-dataset's ``recreate_aligned_images`` step by step (quad from the
68 landmarks; integer pre-shrink with Lanczos when the quad is >= 4x the output; crop with a border;
reflect padding blurred and blended toward the median; PIL ``QUAD`` transform, bilinear, at 4096 px;
Lanczos resize to 256), called with ``output_size=256`` and the original ``transform_size=4096``.

Photographs (``tests/fixtures/photos/README.md``): the astronaut (face enlarged 1.5x; also cut so
that the face runs off the photo's top-left edge, where the recipe pads), the cameraman (face
enlarged 2.9x; dlib needs 3 upsampling passes to find it), Grace Hopper (face shrunk 1.3x). No offline photograph has a face large enough to be shrunk 2x (a quad of >= 512 px),
so the shrink case is Grace Hopper enlarged 3.25x with Lanczos: not a new photograph, but it
drives the recipe's integer pre-shrink (factor 2) and a 4x reduction with photographic content.
PSNR is measured inside the face (the convex hull of the landmarks in the crop); tolerance 44 dB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")
draw = pytest.importorskip("skimage.draw")
scipy_ndimage = pytest.importorskip("scipy.ndimage")
from scipy.spatial import ConvexHull  # noqa: E402

from ipsb.data import ffhq_alignment as fa  # noqa: E402
from ipsb.data.align import FaceAligner, paste_back  # noqa: E402
from ipsb.data.image_reader import read_rgb  # noqa: E402

PHOTOS = Path(__file__).resolve().parent.parent / "fixtures" / "photos"
MIN_PSNR = 44.0


def recipe_quad(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """The recipe's oriented quad (TL, BL, BR, TR) and its side ``qsize``."""
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (lm[48] + lm[54]) * 0.5 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), float(np.hypot(*x) * 2)


def recipe_crop(rgb: np.ndarray, lm: np.ndarray, output_size: int = 256, transform_size: int = 4096) -> np.ndarray:
    """The recipe on uint8 RGB ``[H,W,3]`` with landmarks ``[68,2]`` -> uint8 ``[S,S,3]``."""
    img = Image.fromarray(rgb)
    quad, qsize = recipe_quad(lm)
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink))), Image.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.size[0]),
            min(hi[1] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - crop[:2]
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.size[0] + border, 0),
           max(hi[1] - img.size[1] + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = a.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        sigma = qsize * 0.02
        a += (scipy_ndimage.gaussian_filter(a, [sigma, sigma, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)))
        quad = quad + pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return np.asarray(img)


def face_region(lm: np.ndarray, size: int = 256) -> np.ndarray:
    """bool ``[S,S]``: the convex hull of the landmarks, mapped into the recipe's (un-shrunk) crop."""
    quad, _ = recipe_quad(lm)
    corners = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
    affine = np.linalg.lstsq(np.c_[quad, np.ones(4)], corners, rcond=None)[0]
    p = np.c_[lm, np.ones(len(lm))] @ affine
    hull = p[ConvexHull(p).vertices]
    mask = np.zeros((size, size), bool)
    rr, cc = draw.polygon(hull[:, 1], hull[:, 0], (size, size))
    mask[rr, cc] = True
    return mask


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    err = (a.astype(np.float64) - b.astype(np.float64))[region]
    return float(10 * np.log10(255.0 ** 2 / max((err ** 2).mean(), 1e-12)))


def paste_psnr(rgb: np.ndarray, aligned, matrix: torch.Tensor) -> float:
    """PSNR of the crop pasted back by ``matrix`` against the photo, over the landmarks' box."""
    x0, y0 = np.floor(aligned.landmarks.numpy().min(0)).astype(int)
    x1, y1 = np.ceil(aligned.landmarks.numpy().max(0)).astype(int)
    box = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    out = paste_back(box, aligned.image, matrix @ fa.translation_matrix(x0, y0), feather=8)
    return psnr(out, box, np.ones(box.shape[:2], bool))


def _photo(name: str) -> np.ndarray:
    if name == "astronaut_cut":  # the face runs off the top-left edge: the recipe pads there
        return np.ascontiguousarray(read_rgb(PHOTOS / "astronaut.jpg")[60:, 170:])
    if name == "grace_hopper_x3.25":
        im = Image.open(PHOTOS / "grace_hopper.jpg").convert("RGB")
        return np.asarray(im.resize((round(im.width * 3.25), round(im.height * 3.25)), Image.LANCZOS))
    return read_rgb(PHOTOS / name)


# photo, dlib upsampling passes (detection only), qsize / 256 range (< 1: the face is enlarged,
# > 1: shrunk)
CASES = [
    ("astronaut.jpg", 1, (0.6, 0.75)),
    ("camera.png", 3, (0.3, 0.4)),
    ("grace_hopper.jpg", 1, (1.2, 1.35)),
    ("grace_hopper_x3.25", 0, (4.0, 4.2)),  # >= 4: the recipe's pre-shrink by 2 runs
    ("astronaut_cut", 1, (0.6, 0.75)),
]
_ALIGNED: dict[str, tuple] = {}
_REFERENCE: dict[str, np.ndarray] = {}


def _aligned(name: str, upsample: int):
    """(photo, ipsb's default 256 crop of it), computed once per photo."""
    if name not in _ALIGNED:
        rgb = _photo(name)
        _ALIGNED[name] = rgb, FaceAligner(upsample=upsample).align(rgb, name=name)
    return _ALIGNED[name]


def _reference(name: str, upsample: int) -> np.ndarray:
    """The recipe's 256 crop with the landmarks ipsb found, computed once per photo."""
    if name not in _REFERENCE:
        rgb, aligned = _aligned(name, upsample)
        _REFERENCE[name] = recipe_crop(rgb, aligned.landmarks.numpy().astype(np.float64))
    return _REFERENCE[name]


@pytest.mark.parametrize("name,upsample,scale", CASES, ids=[c[0] for c in CASES])
def test_default_crop_matches_the_ffhq_recipe(name, upsample, scale):
    rgb, aligned = _aligned(name, upsample)
    lm = aligned.landmarks.numpy().astype(np.float64)
    _, qsize = recipe_quad(lm)
    assert scale[0] < qsize / 256 < scale[1]
    ours = ((aligned.image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    ref = _reference(name, upsample)
    region = face_region(lm)
    assert region.sum() > 0.1 * 256 * 256
    assert psnr(ours, ref, region) >= MIN_PSNR
    # the matrix describes that crop: quad -> crop corners exactly, and the crop pastes back onto
    # the photo far better than with the matrix moved by half a crop pixel
    assert (fa.apply_matrix(aligned.matrix, aligned.quad) - fa.crop_corners(256)).abs().max() < 1e-6
    exact = paste_psnr(rgb, aligned, aligned.matrix)
    assert exact > 32
    assert exact > paste_psnr(rgb, aligned, fa.translation_matrix(0.5, 0) @ aligned.matrix) + 3


def test_preshrink_moves_the_shown_quad_as_the_recipe_does():
    """With the recipe's pre-shrink by 2 the crop shows FFHQ's quad moved by (2 - 1) / 2 px; the
    reported quad and matrix say so, and the matrix of the unmoved quad pastes back worse."""
    rgb, aligned = _aligned("grace_hopper_x3.25", 0)
    quad = fa.ffhq_quad(aligned.landmarks)
    assert fa.shrink_factor(quad, 256) == 2
    torch.testing.assert_close(aligned.quad, quad + 0.5, rtol=0, atol=1e-9)  # 1950x1664 halves exactly
    assert paste_psnr(rgb, aligned, aligned.matrix) > paste_psnr(rgb, aligned, fa.quad_to_matrix(quad, 256)) + 1


@pytest.mark.parametrize("name,upsample", [("astronaut_cut", 1), ("grace_hopper_x3.25", 0)])
def test_recipe_transform_size_gives_the_recipe_bit_for_bit(name, upsample):
    """With the recipe's own transform_size (4096) ipsb's crop is the reference's, pixel for pixel:
    padding (blur, median blend) and pre-shrink included."""
    rgb, aligned = _aligned(name, upsample)
    exact = FaceAligner(transform_size=4096).align_landmarks(rgb, aligned.landmarks)
    ours = ((exact.image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, _reference(name, upsample))
