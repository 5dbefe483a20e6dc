"""Aligners for frames that are already face crops (tests, the toy world, pre-aligned datasets).

They implement the same call as :class:`ipsb.data.align.FaceAligner` --
``align(image_uint8_HWC, name=None) -> AlignedFace`` -- but detect nothing:

* :class:`CenterCropAligner` takes the central square of the frame (``crop_fraction`` of its
  shorter side) and resizes it to ``output_size`` (antialiased bilinear);
* :class:`IdentityAligner` takes the frame as it is; it must already be ``output_size`` square.

Use them only when frames are known to be aligned faces; on real footage use ``FaceAligner``.
A callable ``has_face(image) -> bool`` may be given to emulate frames without a face (tests): those
raise :class:`ipsb.data.align.NoFaceError` like the dlib aligner does.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ipsb.data.align import AlignedFace, Aligner, NoFaceError, image_to_tensor, to_rgb_uint8


def _aligned(crop: torch.Tensor, matrix: torch.Tensor, quad: torch.Tensor) -> AlignedFace:
    return AlignedFace(image=crop, matrix=matrix, quad=quad,
                       landmarks=torch.full((68, 2), float("nan"), dtype=torch.float32))


class CenterCropAligner(Aligner):
    """Central square crop (``crop_fraction`` of the shorter side) resized to ``output_size``."""

    def __init__(self, output_size: int = 256, crop_fraction: float = 1.0,
                 has_face: Optional[Callable[[np.ndarray], bool]] = None):
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0,1], got {crop_fraction}")
        self.output_size, self.crop_fraction, self.has_face = int(output_size), float(crop_fraction), has_face

    def __repr__(self) -> str:
        return f"CenterCropAligner(output_size={self.output_size}, crop_fraction={self.crop_fraction})"

    def align(self, image, name: Optional[str] = None) -> AlignedFace:
        """image: uint8 RGB ``[H,W,3]`` (or anything ``to_rgb_uint8`` takes) -> AlignedFace, image ``[3,S,S]`` in [-1,1]."""
        rgb = to_rgb_uint8(image)
        if self.has_face is not None and not self.has_face(rgb):
            raise NoFaceError(f"no face in {name or 'the image'}")
        h, w = rgb.shape[:2]
        side = max(1, int(round(min(h, w) * self.crop_fraction)))
        top, left = (h - side) // 2, (w - side) // 2
        crop = image_to_tensor(rgb[top:top + side, left:left + side])
        s = self.output_size
        if side != s:
            crop = F.interpolate(crop[None], size=(s, s), mode="bilinear", align_corners=False,
                                 antialias=side > s)[0].clamp(-1, 1)
        scale = s / side
        matrix = torch.tensor([[scale, 0, -left * scale], [0, scale, -top * scale], [0, 0, 1]], dtype=torch.float64)
        quad = torch.tensor([[left, top], [left, top + side], [left + side, top + side], [left + side, top]],
                            dtype=torch.float64)
        return _aligned(crop, matrix, quad)


class IdentityAligner(CenterCropAligner):
    """The frame as it is (must be ``output_size`` x ``output_size``): ValueError otherwise."""

    def __repr__(self) -> str:
        return f"IdentityAligner(output_size={self.output_size})"

    def align(self, image, name: Optional[str] = None) -> AlignedFace:
        rgb = to_rgb_uint8(image)
        if rgb.shape[:2] != (self.output_size, self.output_size):
            raise ValueError(f"IdentityAligner: {name or 'image'} is {rgb.shape[1]}x{rgb.shape[0]}, expected an "
                             f"already aligned {self.output_size}x{self.output_size} face")
        return super().align(rgb, name)
