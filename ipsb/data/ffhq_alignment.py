"""FFHQ alignment math: the crop quad from 68 landmarks, the crop matrix, and kornia warps.

The quad is the FFHQ dataset's own recipe (``recreate_aligned_images`` of NVlabs/ffhq-dataset):
eye centres = means of landmarks 36-41 and 42-47, mouth corners = 48 and 54;
``x = eye_to_eye - rot90(eye_to_mouth)``, normalised and scaled to
``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, ``y = rot90(x)``, centre ``c = eye_avg + 0.1 eye_to_mouth``;
corners ``[c-x-y, c-x+y, c+x+y, c+x-y]`` = top-left, bottom-left, bottom-right, top-right of the crop.

Coordinates are **pixel-index** coordinates (pixel centres at integers, as dlib landmarks and kornia
with ``align_corners=True`` use). FFHQ samples with PIL's ``QUAD`` transform on ``quad + 0.5``, i.e.
the quad corners land on the outer corners of the crop: ``(-0.5,-0.5)``, ``(-0.5,S-0.5)``,
``(S-0.5,S-0.5)``, ``(S-0.5,-0.5)``. Since the quad is a rotated square this map is a similarity, so
one affine warp (kornia ``warp_affine``) does it. FFHQ's 4096-px intermediate plus antialiased
resize and its "shrink" pre-downscale are mirrored by ``transform_size`` and :func:`shrink_factor`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def shrink_factor(quad: torch.Tensor, transform_size: int) -> int:
    """FFHQ's pre-downscale: ``floor(qsize / transform_size * 0.5)`` (1 = none)."""
    return max(1, int(math.floor(quad_side(quad) / transform_size * 0.5)))


def warp(image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Warp ``image [B,C,H,W]`` float by ``matrix`` ``[3,3]`` or ``[B,3,3]`` (source pixel -> output pixel)
    to ``[B,C,size[0],size[1]]`` with kornia (``align_corners=True``: pixel-index coordinates)."""
    from kornia.geometry.transform import warp_affine

    m = matrix.to(device=image.device, dtype=image.dtype)
    if m.dim() == 2:
        m = m.expand(image.shape[0], 3, 3)
    return warp_affine(image, m[:, :2], dsize=tuple(size), mode=mode, padding_mode=padding_mode, align_corners=True)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``[B,C,H,W]`` (pixel edges aligned, as :func:`resize_matrix`)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


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
