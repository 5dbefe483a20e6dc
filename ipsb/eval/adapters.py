"""Small adapters that let toy / alternative networks play a metric network's role.

* :class:`RegressorAnglePose` -- a :class:`PoseEstimator` from a 3DMM regressor's ``angle`` group
  (radians -> degrees). Used for the toy world, which has no HopeNet: it reports only the degree
  form of the pose error (no 66-bin logits, so no ``sqrt(MSE*66)/2`` column).
* :class:`CoeffFeatures` -- an FID feature network made of a regressor's coefficients
  (``[B,C]``), for the toy world where no Inception network makes sense on 64 px renders. FIDs
  computed with it are toy numbers, comparable only with each other.

Both are ``torch.func``-compatible thin wrappers (no in-place ops, no data-dependent control flow).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ipsb.backbone.interfaces import PoseEstimator, freeze


def _group_slice(regressor: nn.Module, group: str, default: Optional[Sequence[int]]) -> tuple[int, int]:
    groups = getattr(regressor, "coeff_groups", None)
    if isinstance(groups, dict) and group in groups:
        a, b = groups[group]
        return int(a), int(b)
    if default is not None:
        return int(default[0]), int(default[1])
    raise ValueError(f"{type(regressor).__name__} has no coeff_groups[{group!r}]; pass the slice explicitly")


class RegressorAnglePose(PoseEstimator):
    """image ``[B,3,H,W]`` in [-1,1] -> (yaw, pitch, roll) ``[B,3]`` degrees from the regressor's angles.

    ``angle_slice``: ``(start, end)`` of the 3 angle coefficients (radians) when the regressor has
    no ``coeff_groups`` (Deep3D: ``(224, 227)``).
    """

    def __init__(self, regressor: nn.Module, angle_slice: Optional[Sequence[int]] = None):
        super().__init__()
        self.regressor = regressor
        self.angle_slice = _group_slice(regressor, "angle", angle_slice)
        if self.angle_slice[1] - self.angle_slice[0] != 3:
            raise ValueError(f"angle_slice must cover 3 coefficients, got {self.angle_slice}")
        freeze(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        a, b = self.angle_slice
        return self.regressor(image)[:, a:b] * (180.0 / math.pi)


class CoeffFeatures(nn.Module):
    """image ``[B,3,H,W]`` in [-1,1] -> the regressor's coefficients ``[B,C]`` as FID features."""

    def __init__(self, regressor: nn.Module):
        super().__init__()
        self.regressor = regressor
        freeze(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.regressor(image).flatten(1)
