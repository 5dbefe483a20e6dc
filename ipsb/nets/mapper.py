"""The stage-1 mapper: 3DMM coefficients of a (source, target) pair -> a W+ edit of the source.

Inputs (flat 3DMM vectors ``[B,C]`` as a :class:`~ipsb.backbone.interfaces.FaceModel` lays them
out; the groups used are constructor arguments, defaults below):

* from the **source**: ``id`` (shape), ``exp`` (expression), ``angle`` and ``trans`` (pose),
  ``gamma`` (illumination) — the source's own attributes say where the edit starts from;
* from the **target**: ``exp``, ``angle``, ``trans``, ``gamma`` — where the edit must go (L_render
  asks for the target's illumination, so lighting is part of the edit);
* and, for every group given for both, the difference ``target - source`` (the edit the mapper
  has to produce, made explicit so a small MLP learns it quickly).

Groups the face model lacks raise a ValueError naming the known ones.

Outputs (``mode``):

* ``"basis"`` (the method): ``K`` coordinates ``c [B,K]`` in a StyleIPSB basis;
  ``w_s->t = w_s + reshape(V c)``.
* ``"free"`` (the paper's "no basis" ablation): a free W+ offset ``[B,num_ws,w_dim]`` that is zero
  outside the same layers the basis may move (``layer_mask``).

The last linear layer starts at zero, so an untrained mapper returns ``w_s`` unchanged. The forward
pass is plain ``torch`` (no in-place ops on inputs, no data-dependent control flow), so it works
under ``torch.func`` transforms.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

DEFAULT_SOURCE_GROUPS = ("id", "exp", "angle", "trans", "gamma")
DEFAULT_TARGET_GROUPS = ("exp", "angle", "trans", "gamma")
MODES = ("basis", "free")


def _slices(coeff_groups: Mapping[str, tuple[int, int]], names: Sequence[str], who: str) -> list[tuple[int, int]]:
    out = []
    for n in names:
        if n not in coeff_groups:
            raise ValueError(f"{who} coefficient group {n!r} is not in this face model; "
                             f"known groups: {sorted(coeff_groups)}")
        a, b = coeff_groups[n]
        out.append((int(a), int(b)))
    return out


class CoeffMapper(nn.Module):
    """MLP ``(coeff_source [B,C], coeff_target [B,C]) -> c [B,K]`` or a free offset ``[B,num_ws,w_dim]``.

    Args:
        coeff_groups: the face model's ``{group: (start, end)}`` layout of the flat vector.
        num_coeffs: ``C``, the width of the flat vector (checked on every call).
        out_dim: ``K`` for ``mode="basis"``; ignored for ``"free"``.
        mode: ``"basis"`` or ``"free"``.
        layer_mask: bool ``[num_ws]``, the W+ layers a free offset may move (required for ``"free"``).
        w_dim: W+ row width (required for ``"free"``).
        hidden_dim, depth: MLP width and number of hidden layers (>= 1).
        source_groups, target_groups: coefficient groups read from source and target.
    """

    def __init__(self, coeff_groups: Mapping[str, tuple[int, int]], num_coeffs: int, out_dim: int = 0,
                 mode: str = "basis", layer_mask: torch.Tensor | None = None, w_dim: int = 0,
                 hidden_dim: int = 256, depth: int = 3,
                 source_groups: Sequence[str] = DEFAULT_SOURCE_GROUPS,
                 target_groups: Sequence[str] = DEFAULT_TARGET_GROUPS):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mapper mode must be one of {MODES}, got {mode!r}")
        if depth < 1 or hidden_dim < 1:
            raise ValueError(f"mapper needs depth >= 1 and hidden_dim >= 1, got {depth}, {hidden_dim}")
        self.mode = mode
        self.num_coeffs = int(num_coeffs)
        self.source_slices = _slices(coeff_groups, source_groups, "source")
        self.target_slices = _slices(coeff_groups, target_groups, "target")
        both = [g for g in target_groups if g in source_groups]
        self.diff_slices = _slices(coeff_groups, both, "target")
        in_dim = sum(b - a for a, b in self.source_slices + self.target_slices + self.diff_slices)
        if mode == "basis":
            if out_dim < 1:
                raise ValueError(f"mode='basis' needs out_dim = K >= 1 basis directions, got {out_dim}")
            self.out_dim = int(out_dim)
            self.register_buffer("layer_mask", torch.zeros(0, dtype=torch.bool), persistent=False)
        else:
            if layer_mask is None or w_dim < 1:
                raise ValueError("mode='free' needs layer_mask [num_ws] and w_dim (the layers the basis moves)")
            layer_mask = torch.as_tensor(layer_mask, dtype=torch.bool)
            if layer_mask.dim() != 1 or not bool(layer_mask.any()):
                raise ValueError(f"layer_mask must be a non-empty bool [num_ws], got {layer_mask.tolist()}")
            self.register_buffer("layer_mask", layer_mask.clone(), persistent=False)
            self.w_dim = int(w_dim)
            self.out_dim = int(layer_mask.sum()) * self.w_dim
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden_dim), nn.LeakyReLU(0.2)]
            d = hidden_dim
        head = nn.Linear(d, self.out_dim)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.net = nn.Sequential(*layers, head)
        self.in_dim = in_dim

    def features(self, coeff_source: torch.Tensor, coeff_target: torch.Tensor) -> torch.Tensor:
        """The MLP input ``[B,in_dim]``: source groups, target groups, target - source."""
        for name, c in (("source", coeff_source), ("target", coeff_target)):
            if c.dim() != 2 or c.shape[1] != self.num_coeffs:
                raise ValueError(f"{name} 3DMM coefficients must be [B,{self.num_coeffs}], got {list(c.shape)}")
        parts = [coeff_source[:, a:b] for a, b in self.source_slices]
        parts += [coeff_target[:, a:b] for a, b in self.target_slices]
        parts += [coeff_target[:, a:b] - coeff_source[:, a:b] for a, b in self.diff_slices]
        return torch.cat(parts, 1)

    def forward(self, coeff_source: torch.Tensor, coeff_target: torch.Tensor) -> torch.Tensor:
        """``mode="basis"``: ``c [B,K]``. ``mode="free"``: W+ offset ``[B,num_ws,w_dim]`` (0 off-mask)."""
        out = self.net(self.features(coeff_source, coeff_target))
        if self.mode == "basis":
            return out
        num_ws = self.layer_mask.numel()
        rows = out.reshape(out.shape[0], -1, self.w_dim)                     # [B,L,w_dim]
        index = torch.cumsum(self.layer_mask.long(), 0) - 1                  # masked row -> slot
        picked = rows[:, index.clamp_min(0)]                                 # [B,num_ws,w_dim]
        return picked * self.layer_mask.to(out.dtype).reshape(1, num_ws, 1)


class SwapEditor(nn.Module):
    """Mapper + basis: ``(w_s [B,num_ws,w_dim], a^s [B,C], a^t [B,C]) -> w_s->t [B,num_ws,w_dim]``.

    ``V [num_ws*w_dim, K]`` is a buffer (saved with the weights, moved with the module); for a
    ``mode="free"`` mapper it is empty ``[num_ws*w_dim, 0]`` and the mapper's offset is used directly.
    """

    def __init__(self, mapper: CoeffMapper, V: torch.Tensor, num_ws: int, w_dim: int):
        super().__init__()
        if V.dim() != 2 or V.shape[0] != num_ws * w_dim:
            raise ValueError(f"basis V must be [num_ws*w_dim={num_ws * w_dim}, K], got {list(V.shape)}")
        if mapper.mode == "basis" and V.shape[1] != mapper.out_dim:
            raise ValueError(f"the mapper outputs {mapper.out_dim} coordinates but the basis has {V.shape[1]} columns")
        self.mapper = mapper
        self.num_ws, self.w_dim = int(num_ws), int(w_dim)
        self.register_buffer("V", V.detach().float().clone())

    def offset(self, coeff_source: torch.Tensor, coeff_target: torch.Tensor) -> torch.Tensor:
        """The W+ edit ``[B,num_ws,w_dim]`` (``reshape(V c)`` or the free offset)."""
        out = self.mapper(coeff_source, coeff_target)
        if self.mapper.mode == "free":
            return out
        return (out @ self.V.T.to(out.dtype)).reshape(out.shape[0], self.num_ws, self.w_dim)

    def forward(self, w_source: torch.Tensor, coeff_source: torch.Tensor, coeff_target: torch.Tensor) -> torch.Tensor:
        if w_source.dim() != 3 or w_source.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"w_source must be [B,{self.num_ws},{self.w_dim}], got {list(w_source.shape)}")
        return w_source + self.offset(coeff_source, coeff_target)
