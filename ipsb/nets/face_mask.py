"""FaceRegionMask: the soft face mask of stage 3 and of pasting, from the parser or the 3DMM render.

``source="parser"``: the backbone's :class:`~ipsb.backbone.interfaces.FaceMasker` (BiSeNet on real
weights, the toy U-Net in the toy world) on the image. ``source="render"``: the rendered 3DMM face
of the image's regressed coefficients (``backbone.regressor`` -> ``face_model`` -> ``renderer``).
The raw mask ``[B,1,H,W]`` in [0,1] is then binarised at ``threshold`` (0: keep it soft), grown by
``dilate`` pixels (kornia grayscale dilation with a square kernel of side ``2*dilate+1``) and
feathered by a Gaussian blur of ``feather`` pixels sigma (kornia), so the seam between swap and
target lies just outside the face and is soft. Sizes are given in pixels of a 256-px image and scaled
to the actual image side (``scale_with_size``), so one config serves the toy (64 px) and FFHQ.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from kornia.morphology import dilation
from torch import nn

SOURCES = ("parser", "render")


def raw_face_mask(backbone, image: torch.Tensor, source: str = "auto",
                  coeffs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The undilated soft face mask ``[B,1,H,W]`` in [0,1] of ``image`` ``[B,3,H,W]`` in [-1,1], at the
    image's size. ``source``: ``"parser"`` (the backbone's masker), ``"render"`` (the rendered 3DMM face
    of ``coeffs`` ``[B,C]``, regressed from the image when None) or ``"auto"`` (the masker when the
    backbone has one, else the render)."""
    masker = getattr(backbone, "masker", None)
    if source == "auto":
        source = "render" if masker is None else "parser"
    if source == "parser":
        if masker is None:
            raise ValueError("face mask source 'parser' needs a backbone with a masker (BiSeNet); "
                             "add one to the backbone config or use source='render'")
        mask = masker(image)
    else:
        geom = backbone.face_model(backbone.regressor(image) if coeffs is None else coeffs)
        mask = backbone.renderer(geom.vertices, backbone.face_model.faces, geom.colors).mask
    if mask.shape[-2:] != image.shape[-2:]:
        mask = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return mask.clamp(0, 1)


class FaceRegionMask(nn.Module):
    """image ``[B,3,H,W]`` in [-1,1] -> dilated, feathered face mask ``[B,1,H,W]`` in [0,1].

    Args:
        source: ``"parser"`` or ``"render"`` (module docstring).
        dilate: dilation radius in pixels (at 256 px).
        feather: Gaussian sigma in pixels (at 256 px); 0 = no blur.
        threshold: binarise the raw mask at this value first (0 keeps the soft mask).
        scale_with_size: scale ``dilate``/``feather`` by ``H / 256``.
    """

    def __init__(self, source: str = "parser", dilate: float = 8.0, feather: float = 4.0,
                 threshold: float = 0.5, scale_with_size: bool = True):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"face mask source must be one of {SOURCES}, got {source!r}")
        if dilate < 0 or feather < 0 or not 0 <= threshold < 1:
            raise ValueError(f"need dilate >= 0, feather >= 0, 0 <= threshold < 1; got {dilate}, {feather}, {threshold}")
        self.source, self.dilate, self.feather = source, float(dilate), float(feather)
        self.threshold, self.scale_with_size = float(threshold), bool(scale_with_size)

    def raw(self, backbone, image: torch.Tensor) -> torch.Tensor:
        """The undilated mask ``[B,1,H,W]`` in [0,1] of ``image`` from the configured source."""
        return raw_face_mask(backbone, image, self.source)

    def refine(self, mask: torch.Tensor) -> torch.Tensor:
        """Threshold, dilate and feather a raw mask ``[B,1,H,W]`` in [0,1]."""
        if self.threshold > 0:
            mask = (mask > self.threshold).to(mask.dtype)
        scale = mask.shape[-1] / 256.0 if self.scale_with_size else 1.0
        radius = int(round(self.dilate * scale))
        if radius > 0:
            kernel = torch.ones(2 * radius + 1, 2 * radius + 1, dtype=mask.dtype, device=mask.device)
            mask = dilation(mask, kernel)
        sigma = self.feather * scale
        if sigma > 0.05:
            k = 2 * int(3 * sigma + 0.5) + 1
            mask = gaussian_blur2d(mask, (k, k), (sigma, sigma), border_type="replicate")
        return mask.clamp(0, 1)

    @torch.no_grad()
    def forward(self, backbone, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an image batch [B,3,H,W] in [-1,1], got {list(image.shape)}")
        return self.refine(self.raw(backbone, image))
