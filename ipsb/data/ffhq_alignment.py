"""FFHQ alignment: the crop quad from 68 landmarks, the recipe's crop, its matrix, and kornia warps.

The crop is the FFHQ dataset's recipe (``recreate_aligned_images`` of NVlabs/ffhq-dataset), done with
the same libraries (PIL, numpy, scipy) as the original:

1. quad (:func:`ffhq_quad`): eye centres = means of landmarks 36-41 and 42-47, mouth corners = 48
   and 54; ``x = eye_to_eye - rot90(eye_to_mouth)``, normalised and scaled to
   ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, ``y = rot90(x)``, centre
   ``c = eye_avg + 0.1 eye_to_mouth``; corners ``[c-x-y, c-x+y, c+x+y, c+x-y]`` = top-left,
   bottom-left, bottom-right, top-right of the crop; ``qsize = 2 |x|``;
2. shrink: by the integer ``floor(qsize / output_size / 2)`` when it is > 1 (PIL Lanczos resize);
3. crop to the quad's bounding box plus a border of ``max(round(0.1 qsize), 3)`` px;
4. pad where the quad comes within 4 px of the image edge: reflect padding of at least
   ``round(0.3 qsize)`` px, blurred (Gaussian, sigma ``0.02 qsize``) and blended toward the median
   colour with distance from the image;
5. quad transform (PIL ``QUAD``, bilinear) to ``transform_size`` pixels (supersampling);
6. Lanczos resize to ``output_size``.

After a pre-shrink the recipe places the quad at ``quad / shrink`` in the shrunk photo, which ignores
that pixel centres sit at half-pixel offsets: the crop then shows the quad moved by about
``(shrink - 1) / 2`` original pixels right and down. ipsb keeps that placement, so its crops equal
the recipe's (placing the quad exactly instead moves a 4x-shrunk 256 crop by 0.12 px, which costs
20 dB PSNR against the recipe on the test photo), and reports the quad the crop really shows, with an
exact original -> crop matrix. ``transform_size`` is the recipe's 4096 here;
:class:`ipsb.data.align.FaceAligner` defaults to 4 x the output side (``docs/data.md``).

Coordinates are **pixel-index** coordinates (pixel centres at integers, as dlib landmarks and kornia
with ``align_corners=True`` use). The recipe samples with PIL's ``QUAD`` transform on ``quad + 0.5``,
i.e. the quad corners land on the outer corners of the crop: ``(-0.5,-0.5)``, ``(-0.5,S-0.5)``,
``(S-0.5,S-0.5)``, ``(S-0.5,-0.5)``. The quad is a rotated square, so original -> crop is a
similarity (up to the pre-shrink's rounding of the image size): one ``[3,3]`` affine matrix, which :func:`warp` (kornia ``warp_affine``, differentiable) inverts
to paste a processed crop back.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def ffhq_quad(landmarks68) -> torch.Tensor:
    """68 landmarks ``[68,2]`` (x, y image pixels) -> FFHQ crop quad ``[4,2]`` float64 (TL, BL, BR, TR)."""
    lm = torch.as_tensor(landmarks68, dtype=torch.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks [68,2], got {list(lm.shape)}")
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - torch.stack([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / torch.linalg.norm(x)
    x = x * max(float(torch.linalg.norm(eye_to_eye)) * 2.0, float(torch.linalg.norm(eye_to_mouth)) * 1.8)
    y = torch.stack([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return torch.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_side(quad: torch.Tensor) -> float:
    """Side length of the (square) quad in pixels (FFHQ's ``qsize``)."""
    return float(torch.linalg.norm(torch.as_tensor(quad, dtype=torch.float64)[1] - quad[0]))


def crop_corners(size: int) -> torch.Tensor:
    """Outer corners of an S-pixel crop in pixel-index coordinates, in quad order ``[4,2]``."""
    lo, hi = -0.5, size - 0.5
    return torch.tensor([[lo, lo], [lo, hi], [hi, hi], [hi, lo]], dtype=torch.float64)


def quad_to_matrix(quad: torch.Tensor, size: int) -> torch.Tensor:
    """Affine ``[3,3]`` float64 mapping image pixel-index coords to crop coords, quad -> crop corners.

    Least-squares affine fit over the four corners (exact for FFHQ's square quads).
    """
    q = torch.as_tensor(quad, dtype=torch.float64)
    src = torch.cat([q, torch.ones(4, 1, dtype=torch.float64)], 1)  # [4,3]
    sol = torch.linalg.lstsq(src, crop_corners(size)).solution  # [3,2]
    m = torch.eye(3, dtype=torch.float64)
    m[:2] = sol.T
    return m


def resize_matrix(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """``[3,3]`` pixel-index map of a resize from ``src_hw`` to ``dst_hw`` (pixel edges aligned)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return torch.tensor([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=torch.float64)


def shrink_factor(quad: torch.Tensor, output_size: int) -> int:
    """The recipe's pre-shrink: the integer ``floor(qsize / output_size * 0.5)``; 1 = none."""
    return max(1, int(math.floor(quad_side(quad) / output_size * 0.5)))


def translation_matrix(dx: float, dy: float) -> torch.Tensor:
    """``[3,3]`` float64 map ``(x, y) -> (x + dx, y + dy)``."""
    return torch.tensor([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=torch.float64)


def _blur_pad(rgb: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """The recipe's padding of uint8 ``[H,W,3]`` by ``pad`` = (left, top, right, bottom) px: reflect,
    blur toward the outside (sigma ``0.02 qsize``), blend toward the median colour; -> uint8."""
    import scipy.ndimage

    left, top, right, bottom = pad
    img = np.pad(np.float32(rgb), ((top, bottom), (left, right), (0, 0)), "reflect")
    h, w, _ = img.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    # 1 at the outer edge, 0 where the original image starts, negative inside it
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / left, np.float32(w - 1 - x) / right),
                      1.0 - np.minimum(np.float32(y) / top, np.float32(h - 1 - y) / bottom))
    blur = qsize * 0.02
    img += (scipy.ndimage.gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(img), 0, 255))


def ffhq_crop(rgb: np.ndarray, quad: torch.Tensor, output_size: int, transform_size: int = 4096,
              enable_padding: bool = True) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The FFHQ recipe (module docstring): uint8 RGB ``[H,W,3]`` and quad ``[4,2]`` -> the crop.

    Written here from the recipe's steps with PIL, numpy and scipy because ffhq-dataset is a download
    script, not an importable library.

    Args:
        rgb: the photo, uint8 ``[H,W,3]``.
        quad: :func:`ffhq_quad` of its landmarks (pixel-index coordinates).
        output_size: side S of the crop.
        transform_size: side of the supersampled quad transform (the recipe's 4096); values below
            S are raised to S.
        enable_padding: the recipe's blurred reflect padding (False: black outside the photo).

    Returns ``(crop uint8 [S,S,3], matrix [3,3] float64, shown [4,2] float64)``: ``matrix`` maps
    original pixel-index coordinates to crop ones, ``shown`` is the quad the crop shows (its corners
    map to the crop's outer corners exactly): ``quad`` itself, or, after a pre-shrink, ``quad``
    moved by the recipe's placement of the shrunk quad (about ``(shrink - 1) / 2`` px right and down).
    """
    from PIL import Image

    s, t = int(output_size), max(int(transform_size), int(output_size))
    quad = torch.as_tensor(quad, dtype=torch.float64)
    img = Image.fromarray(np.ascontiguousarray(rgb))
    h, w = rgb.shape[:2]
    qsize = quad_side(quad)
    to_work = torch.eye(3, dtype=torch.float64)  # original pixel-index coords -> working image's
    q = quad.numpy()  # the quad in the working image
    shrink = shrink_factor(quad, s)
    if shrink > 1:
        size = (max(1, int(np.rint(w / shrink))), max(1, int(np.rint(h / shrink))))
        img = img.resize(size, Image.Resampling.LANCZOS)
        to_work = resize_matrix((h, w), (size[1], size[0]))
        q, qsize = q / shrink, qsize / shrink  # the recipe's placement (see the module docstring)
        shown = apply_matrix(torch.linalg.inv(to_work), torch.from_numpy(q))
    else:
        shown = quad
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(q.min(0)).astype(int), np.ceil(q.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
            min(hi[1] + border, img.height))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise ValueError(f"the face quad {quad.tolist()} lies outside the {w}x{h} image")
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        to_work = translation_matrix(-crop[0], -crop[1]) @ to_work
        q = q - crop[:2]
    lo, hi = np.floor(q.min(0)).astype(int), np.ceil(q.max(0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.width + border, 0),
           max(hi[1] - img.height + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = tuple(int(p) for p in np.maximum(pad, max(int(np.rint(qsize * 0.3)), 1)))
        img = Image.fromarray(_blur_pad(np.asarray(img), pad, qsize))
        to_work = translation_matrix(pad[0], pad[1]) @ to_work
        q = q + pad[:2]
    img = img.transform((t, t), Image.Transform.QUAD, tuple((q + 0.5).ravel().tolist()), Image.Resampling.BILINEAR)
    if s < t:
        img = img.resize((s, s), Image.Resampling.LANCZOS)
    matrix = resize_matrix((t, t), (s, s)) @ quad_to_matrix(torch.from_numpy(q), t) @ to_work
    return np.asarray(img), matrix, shown


def warp(image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Warp ``image [B,C,H,W]`` float by ``matrix`` ``[3,3]`` or ``[B,3,3]`` (source pixel -> output pixel)
    to ``[B,C,size[0],size[1]]`` with kornia (``align_corners=True``: pixel-index coordinates)."""
    from kornia.geometry.transform import warp_affine

    m = matrix.to(device=image.device, dtype=image.dtype)
    if m.dim() == 2:
        m = m.expand(image.shape[0], 3, 3)
    return warp_affine(image, m[:, :2], dsize=tuple(size), mode=mode, padding_mode=padding_mode, align_corners=True)


def feather_mask(size: int, feather: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[1,1,S,S]`` mask: 0 on the outermost pixel ring, rising linearly to 1 over ``feather`` px."""
    i = torch.arange(size, dtype=dtype, device=device)
    d = torch.minimum(i, size - 1 - i)  # 0 on the border pixels
    ramp = (d / max(float(feather), 1e-6)).clamp(0, 1)
    return torch.minimum(ramp[:, None], ramp[None, :])[None, None]


def apply_matrix(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply an affine/projective ``[3,3]`` to points ``[...,2]`` (float64)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    p = torch.as_tensor(points, dtype=torch.float64)
    h = p @ m[:2, :2].T + m[:2, 2]
    w = p @ m[2, :2] + m[2, 2]
    return h / w[..., None]
