"""The crop/resize an identity network applies to an aligned face before its forward pass.

Identity networks are trained on tightly cropped faces (arcface 112x112, sphereface 112x96), while
the generator and datasets give FFHQ-aligned squares (256 or 1024 px). pSp/e4e's ID loss bridges the
two with a fixed box: average-pool to 256, crop rows 35..222 and columns 32..219 (188x188), then
``AdaptiveAvgPool2d((112,112))``. :class:`FaceCrop` is that recipe with the box as a parameter;
``box=None`` means the caller already supplies the network's input size (e.g. a 5-point arcface
alignment). Adaptive average pooling (not bilinear) is kept because it is what pSp/e4e do, it is
exact for the integer ratio 1024->256, and it works with ``torch.func`` transforms.

``crop='resize'`` is the FF++ evaluation code of ReliableSwap (``inference/ffplus/eval.py``): the
whole frame, no face box, resized to the network input with ``F.interpolate(..., mode="bilinear",
align_corners=True)``, exactly the call that code makes (docs/evaluation.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

#: pSp/e4e ``extract_feats`` box on a 256 FFHQ-aligned face: (top, bottom, left, right), end-exclusive.
PSP_BOX_256 = (35, 223, 32, 220)
#: The same face region narrowed to the sphereface 112x96 aspect (sphereface = arcface template
#: shifted 8 px in x on a 96-wide canvas): 188 rows x 161 columns, same centre as PSP_BOX_256.
SPHERE_BOX_256 = (35, 223, 45, 206)


def check_image(image: torch.Tensor, who: str) -> None:
    """Raise ValueError unless ``image`` is a float ``[B,3,H,W]`` tensor."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[1] != 3:
        shape = list(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"{who} expects an RGB image tensor [B,3,H,W] in [-1,1], got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"{who} expects a floating point image in [-1,1], got dtype {image.dtype}")


@dataclass(frozen=True)
class FaceCrop:
    """Aligned face ``[B,3,H,W]`` -> network input ``[B,3,out_h,out_w]`` (values unchanged).

    ``box`` = (top, bottom, left, right) in pixels of a ``reference``-sized square; the input is first
    average-pooled to ``reference`` x ``reference`` (it must be square). With ``box=None`` the input
    must already be ``out_size``. ``resize=True``: no box, the whole image is resized to ``out_size``
    (bilinear, ``align_corners=True``).
    """

    out_size: tuple[int, int] = (112, 112)
    box: Optional[tuple[int, int, int, int]] = PSP_BOX_256
    reference: int = 256
    resize: bool = False

    def __call__(self, image: torch.Tensor, who: str = "identity network") -> torch.Tensor:
        check_image(image, who)
        h, w = image.shape[-2:]
        if self.resize:
            if (h, w) == tuple(self.out_size):
                return image
            return F.interpolate(image, size=tuple(self.out_size), mode="bilinear", align_corners=True)
        if self.box is None:
            if (h, w) != tuple(self.out_size):
                raise ValueError(
                    f"{who} was built without a crop box and expects {self.out_size[0]}x"
                    f"{self.out_size[1]} aligned faces, got {h}x{w}; pass an aligned crop of that size "
                    f"or build it with crop='ffhq' for FFHQ-aligned squares")
            return image
        if h != w:
            raise ValueError(f"{who} crops FFHQ-aligned square faces, got a {h}x{w} image")
        if h != self.reference:
            image = F.adaptive_avg_pool2d(image, (self.reference, self.reference))
        top, bottom, left, right = self.box
        image = image[:, :, top:bottom, left:right]
        if tuple(image.shape[-2:]) != tuple(self.out_size):
            image = F.adaptive_avg_pool2d(image, tuple(self.out_size))
        return image


CROP_MODES = ("ffhq", "none", "resize")


def make_crop(crop: str, out_size: tuple[int, int], ffhq_box: tuple[int, int, int, int]) -> FaceCrop:
    """``crop='ffhq'`` -> box crop of an FFHQ-aligned square; ``'none'`` -> input already ``out_size``;
    ``'resize'`` -> the whole image resized to ``out_size`` (bilinear, ``align_corners=True``)."""
    if crop == "ffhq":
        return FaceCrop(out_size=out_size, box=ffhq_box)
    if crop == "none":
        return FaceCrop(out_size=out_size, box=None)
    if crop == "resize":
        return FaceCrop(out_size=out_size, box=None, resize=True)
    raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
