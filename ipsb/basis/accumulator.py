"""Streaming float64 Gram matrices ``mean_i J_i^T J_i`` per group, summed across DDP ranks.

A plain object rather than an ``nn.Module`` buffer on purpose: DDP broadcasts module buffers from
rank 0 before every forward, which would overwrite each rank's partial sums. :meth:`reduced_state`
sums the partial sums and sample counts of every rank in float64 (into a copy: the live partial
sums stay per rank), so 2 processes give the result of 1 up to summation order (about 1e-16
relative). It is also what a checkpoint holds; a resumed run loads it on one rank only
(:meth:`load_state`, zeros elsewhere), so the final sum counts every sample once, whatever the number
of ranks of either run.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.distributed as dist


class GramAccumulator:
    """Sums ``J^T J`` ``[N,N]`` (float64) for each named group over samples.

    Args:
        groups: group names (e.g. ``pose``, ``exp``, ``light``, ``id``).
        dim: ``N``, the number of W+ coordinates the Jacobians have (masked layers x w_dim).
        device: where the sums live.
    """

    def __init__(self, groups: Iterable[str], dim: int, device: Optional[torch.device] = None):
        self.dim = int(dim)
        self.sums = {g: torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device) for g in groups}
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        if not self.sums:
            raise ValueError("GramAccumulator needs at least one group")

    @property
    def groups(self) -> list[str]:
        return list(self.sums)

    def to(self, device) -> "GramAccumulator":
        self.sums = {g: s.to(device) for g, s in self.sums.items()}
        self.count = self.count.to(device)
        return self

    def reset(self) -> None:
        for s in self.sums.values():
            s.zero_()
        self.count.zero_()

    def update(self, jacobians: dict[str, torch.Tensor], weight: Optional[torch.Tensor] = None) -> None:
        """Add one batch: ``{group: J [B,P_g,N]}`` (every group, same ``B``).

        ``weight [B]`` (default ones) scales each sample's ``J^T J`` and its count (0 drops a
        padding sample)."""
        if set(jacobians) != set(self.sums):
            raise ValueError(f"expected Jacobians for groups {sorted(self.sums)}, got {sorted(jacobians)}")
        batch = None
        for g, jac in jacobians.items():
            if jac.dim() != 3 or jac.shape[2] != self.dim:
                raise ValueError(f"Jacobian of group {g!r} must be [B,P,{self.dim}], got {list(jac.shape)}")
            if batch is not None and jac.shape[0] != batch:
                raise ValueError("all groups of one update must have the same batch size")
            batch = jac.shape[0]
            j = jac.detach().to(torch.float64)
            if weight is not None:
                if weight.shape != (batch,):
                    raise ValueError(f"weight must be [{batch}], got {list(weight.shape)}")
                j = j * weight.to(j).sqrt()[:, None, None]
            j = j.reshape(-1, self.dim)
            self.sums[g].addmm_(j.T, j)
        self.count += batch if weight is None else weight.to(self.count).sum()

    def reduced_state(self) -> dict:
        """``{"sums": {group: [N,N] float64 CPU}, "count": float}`` summed over all ranks (a collective
        under torch.distributed: every rank must call it); the live partial sums are unchanged."""
        sums = {g: s.clone() for g, s in self.sums.items()}
        count = self.count.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for s in sums.values():
                dist.all_reduce(s, op=dist.ReduceOp.SUM)
            dist.all_reduce(count, op=dist.ReduceOp.SUM)
        return {"sums": {g: s.cpu() for g, s in sums.items()}, "count": float(count)}

    def load_state(self, state: dict, holder: bool = True) -> None:
        """Restore a :meth:`reduced_state`: this rank takes the sums if ``holder``, zeros otherwise."""
        sums = state.get("sums", {})
        if set(sums) != set(self.sums):
            raise ValueError(f"saved basis sums are for groups {sorted(sums)}, this run has {sorted(self.sums)}")
        for g, s in sums.items():
            if tuple(s.shape) != (self.dim, self.dim):
                raise ValueError(f"saved basis sums of group {g!r} are {list(s.shape)}, this run needs "
                                 f"[{self.dim},{self.dim}] (another layer set or generator?)")
            self.sums[g].copy_(s if holder else torch.zeros_like(s))
        self.count.fill_(float(state.get("count", 0.0)) if holder else 0.0)

    def mean(self) -> dict[str, torch.Tensor]:
        """``{group: mean_i J_i^T J_i [N,N]}`` float64 (symmetrised)."""
        n = float(self.count)
        if n <= 0:
            raise ValueError("no samples were accumulated; the basis needs at least one W+ sample")
        return {g: 0.5 * (s + s.T) / n for g, s in self.sums.items()}
