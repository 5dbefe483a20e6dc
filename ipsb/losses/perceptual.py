"""L_p: perceptual (LPIPS) distance through the backbone's perceptual network, optionally masked.

``backbone.perceptual`` maps two images ``[B,3,H,W]`` in [-1,1] to a distance ``[B]`` or
``[B,1,1,1]`` (lpips' layout); both are accepted. A mask ``[B,1,H,W]`` in [0,1] restricts the
comparison to where it is 1 by multiplying both images with it first (outside pixels become equal
zeros, so they add no distance); stage 2 uses ``1 - face mask`` to compare the surroundings of the face.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def perceptual_distance(perceptual: nn.Module, image: torch.Tensor, target: torch.Tensor,
                        mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample distance ``[B]`` (>= 0) between ``image`` and ``target`` ``[B,3,H,W]`` in [-1,1]."""
    if image.shape != target.shape or image.dim() != 4:
        raise ValueError(f"perceptual distance needs two [B,3,H,W] images of one shape, got "
                         f"{list(image.shape)} and {list(target.shape)}")
    if mask is not None:
        if mask.dim() != 4 or mask.shape[0] != image.shape[0] or mask.shape[1] != 1 \
                or mask.shape[2:] != image.shape[2:]:
            raise ValueError(f"mask must be [B,1,H,W] = [{image.shape[0]},1,{image.shape[2]},{image.shape[3]}], "
                             f"got {list(mask.shape)}")
        mask = mask.to(image.dtype)
        image, target = image * mask, target * mask
    d = perceptual(image, target)
    return d.reshape(d.shape[0], -1).mean(1)


def perceptual_loss(perceptual: nn.Module, image: torch.Tensor, target: torch.Tensor,
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scalar mean of :func:`perceptual_distance`."""
    return perceptual_distance(perceptual, image, target, mask).mean()
