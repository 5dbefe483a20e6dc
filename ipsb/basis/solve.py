"""Averaged Gram matrices -> :class:`~ipsb.basis.artifact.Basis` (top-k per group, orthonormal union)."""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from ipsb.basis.artifact import Basis
from ipsb.basis.eigensolver import orthonormal_union, regularised_metric, solve_group
from ipsb.basis.probe import IDENTITY


def solve_basis(grams: Mapping[str, torch.Tensor], k: Mapping[str, int], mask: torch.Tensor, w_dim: int,
                delta: float = 1e-3, relative_delta: bool = True, generator_sha256: Optional[str] = None,
                config: Optional[dict] = None) -> Basis:
    """Solve ``H_g v = lambda (H_id + delta I) v`` for every attribute group ``g`` in ``k``.

    Args:
        grams: ``{group: mean J^T J [N,N]}`` over the masked coordinates (``N = mask.sum()*w_dim``),
            optionally with ``"id"`` (without it the metric is ``I``: plain Hessian eigenvectors).
        k: ``{group: directions to keep}``, in the column order of the basis.
        mask: bool ``[num_ws]`` layers the Grams were taken over.
        delta: ridge on the identity metric (relative to ``mean diag H_id`` when ``relative_delta``).
    """
    num_ws = int(mask.numel())
    n = int(mask.sum()) * int(w_dim)
    missing = [g for g in k if g not in grams]
    if missing:
        raise ValueError(f"no Gram matrix for groups {missing}; have {sorted(grams)}")
    h_id = grams.get(IDENTITY)
    if h_id is None:   # no identity network: the metric is I, plain Hessian eigenvectors
        metric = torch.eye(n, dtype=torch.float64, device=next(iter(grams.values())).device)
    else:
        metric = regularised_metric(h_id.to(torch.float64), float(delta), relative_delta)
    blocks, evals, energy = [], {}, {}
    for g, kg in k.items():
        sol = solve_group(grams[g].to(torch.float64), metric, int(kg))
        blocks.append(sol.vectors)
        evals[g] = sol.eigenvalues.cpu()
        energy[g] = sol.explained_energy
    q, sizes = orthonormal_union(blocks)
    full = torch.zeros(num_ws, w_dim, q.shape[1], dtype=torch.float64, device=q.device)
    full[mask.to(q.device)] = q.reshape(int(mask.sum()), w_dim, q.shape[1])
    groups, start = {}, 0
    for g, size in zip(k, sizes):
        groups[g] = (start, start + size)
        start += size
    return Basis(full.reshape(num_ws * w_dim, -1).float(), groups, evals, energy, mask.cpu(), num_ws, w_dim,
                 generator_sha256, config)
