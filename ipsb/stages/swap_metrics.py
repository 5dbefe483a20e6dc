"""Validation measures of a swap, shared by stages 1 and 2 (and the stage-1 benchmark).

For a swapped image ``[B,3,H,W]`` in [-1,1] with its source and target, per sample:

* ``exp_error``: L2 distance between the 3DMM expression coefficients (``exp`` group) of the swap
  and of the target, both from ``backbone.regressor`` (the FF++ "expression error").
* ``pose_error``: L2 distance in degrees between (yaw, pitch, roll) of swap and target, from
  ``backbone.pose`` when the backbone has a pose estimator, else from the regressor's ``angle``
  group (radians -> degrees).
* ``id_cosine``: cosine between ``backbone.identity`` embeddings of swap and source (higher = better).

:class:`SwapMetrics` averages them with torchmetrics ``MeanMetric`` (exact under DDP) and can also
average any extra per-sample value (e.g. the perceptual distance outside the face mask).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torchmetrics import MeanMetric

from ipsb.losses.identity import identity_cosine


@dataclass
class Reference:
    """What a swap is measured against: target coefficients ``[B,C]`` and pose ``[B,3]`` (degrees),
    source identity embedding ``[B,D]``."""

    coeff_target: torch.Tensor
    pose_target: torch.Tensor
    id_source: torch.Tensor


def _group(backbone, coeffs: torch.Tensor, name: str) -> torch.Tensor:
    groups = backbone.face_model.coeff_groups
    if name not in groups:
        raise ValueError(f"the face model has no {name!r} coefficient group (has {sorted(groups)})")
    a, b = groups[name]
    return coeffs[:, a:b]


def head_pose(backbone, image: torch.Tensor, coeffs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(yaw, pitch, roll) ``[B,3]`` in degrees: ``backbone.pose`` if present, else the 3DMM angles."""
    pose_net = getattr(backbone, "pose", None)
    if pose_net is not None:
        return pose_net(image)
    if coeffs is None:
        coeffs = backbone.regressor(image)
    return _group(backbone, coeffs, "angle") * (180.0 / math.pi)


def reference(backbone, source: torch.Tensor, target: torch.Tensor,
              coeff_target: Optional[torch.Tensor] = None) -> Reference:
    """Measure source ``[B,3,H,W]`` and target images once (coefficients may be given)."""
    if coeff_target is None:
        coeff_target = backbone.regressor(target)
    return Reference(coeff_target, head_pose(backbone, target, coeff_target), backbone.identity(source))


def swap_errors(backbone, swap: torch.Tensor, ref: Reference,
                coeff_swap: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Per-sample ``{"exp_error", "pose_error", "id_cosine"}``, each ``[B]``, for a swap image."""
    if coeff_swap is None:
        coeff_swap = backbone.regressor(swap)
    exp = (_group(backbone, coeff_swap, "exp") - _group(backbone, ref.coeff_target, "exp")).norm(dim=1)
    pose = (head_pose(backbone, swap, coeff_swap) - ref.pose_target).norm(dim=1)
    ident = identity_cosine(backbone.identity(swap), ref.id_source)
    return {"exp_error": exp, "pose_error": pose, "id_cosine": ident}


class SwapMetrics(nn.Module):
    """``MeanMetric`` per named value; ``update({name: [B]})``, ``compute() -> {name: float tensor}``."""

    def __init__(self, names=("exp_error", "pose_error", "id_cosine")):
        super().__init__()
        self.metrics = nn.ModuleDict({n: MeanMetric() for n in names})

    def update(self, values: dict[str, torch.Tensor]) -> None:
        for name, v in values.items():
            if name not in self.metrics:
                raise KeyError(f"SwapMetrics tracks {list(self.metrics)}, not {name!r}")
            self.metrics[name].update(v.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        return {n: m.compute() for n, m in self.metrics.items()}

    def reset(self) -> None:
        for m in self.metrics.values():
            m.reset()
