"""The StyleIPSB generalized eigenproblem ``H_attr v = lambda (H_id + delta I) v``.

Solved densely: Cholesky ``H_id + delta I = L L^T``, then the symmetric eigendecomposition of the
whitened ``C = L^-1 H_attr L^-T`` (``torch.linalg.eigh``) and ``v = L^-T u``. In float64 this is
exact to rounding for the sizes at hand (``N = 7 x 512 = 3584`` at 1024 px); scipy's ``eigh(a, b)``
would do the same on CPU only, ``torch.linalg`` runs on the accelerator too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GroupSolution:
    """Top-``k`` generalized eigenpairs of one attribute group.

    vectors ``[N,k]`` unit Euclidean norm columns; eigenvalues ``[k]`` descending;
    all_eigenvalues ``[N]`` descending; explained_energy = sum(top k) / sum(all) in [0,1].
    """

    vectors: torch.Tensor
    eigenvalues: torch.Tensor
    all_eigenvalues: torch.Tensor
    explained_energy: float


def _check_square(name: str, m: torch.Tensor, n: int | None = None) -> None:
    if m.dim() != 2 or m.shape[0] != m.shape[1] or (n is not None and m.shape[0] != n):
        raise ValueError(f"{name} must be a square matrix{'' if n is None else f' [{n},{n}]'}, "
                         f"got {list(m.shape)}")


def regularised_metric(h_id: torch.Tensor, delta: float, relative: bool = True) -> torch.Tensor:
    """``H_id + delta I``; with ``relative`` delta is scaled by ``trace(H_id)/N`` (falls back to 1
    when ``H_id`` is zero), so one delta works for any embedding scale."""
    _check_square("H_id", h_id)
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    n = h_id.shape[0]
    scale = 1.0
    if relative:
        mean_diag = float(torch.diagonal(h_id).mean())
        scale = mean_diag if mean_diag > 0 else 1.0
    return h_id + (delta * scale) * torch.eye(n, dtype=h_id.dtype, device=h_id.device)


def generalized_eigh(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenpairs of ``A v = lambda B v`` for symmetric ``A`` and symmetric positive definite ``B``.

    Returns ``(eigenvalues [N] descending, vectors [N,N] unit-norm columns)``, computed in float64.
    Raises ValueError when ``B`` is not positive definite (increase ``delta``).
    """
    _check_square("A", a)
    _check_square("B", b, a.shape[0])
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    chol, info = torch.linalg.cholesky_ex(0.5 * (b64 + b64.T))
    if int(info) != 0:
        raise ValueError("H_id + delta I is not positive definite; increase delta")
    # C = L^-1 A L^-T, symmetric
    left = torch.linalg.solve_triangular(chol, a64, upper=False)
    whitened = torch.linalg.solve_triangular(chol, left.T, upper=False)
    whitened = 0.5 * (whitened + whitened.T)
    evals, u = torch.linalg.eigh(whitened)
    vecs = torch.linalg.solve_triangular(chol.T, u, upper=True)       # v = L^-T u
    vecs = vecs / vecs.norm(dim=0, keepdim=True)
    order = torch.argsort(evals, descending=True)
    return evals[order], vecs[:, order]


def solve_group(h_attr: torch.Tensor, metric: torch.Tensor, k: int) -> GroupSolution:
    """Top-``k`` directions of one group for the metric ``H_id + delta I`` (see :func:`regularised_metric`)."""
    n = h_attr.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1,{n}] for this layer set, got {k}")
    evals, vecs = generalized_eigh(h_attr, metric)
    total = float(evals.clamp_min(0).sum())
    top = evals[:k]
    energy = float(top.clamp_min(0).sum()) / total if total > 0 else 0.0
    return GroupSolution(vecs[:, :k], top, evals, energy)


def relative_residual(a: torch.Tensor, b: torch.Tensor, vecs: torch.Tensor, evals: torch.Tensor) -> torch.Tensor:
    """``||A v - lambda B v|| / (||A v|| + |lambda| ||B v||)`` per column ``[k]``."""
    av, bv = a @ vecs, b @ vecs
    num = (av - bv * evals).norm(dim=0)
    return num / (av.norm(dim=0) + evals.abs() * bv.norm(dim=0)).clamp_min(torch.finfo(a.dtype).tiny)


def orthonormal_union(blocks: list[torch.Tensor], tol: float = 1e-8) -> tuple[torch.Tensor, list[int]]:
    """Orthonormalise ``[N,k_g]`` blocks in order: each block minus the span of the earlier ones.

    Returns ``(Q [N,K], sizes)``: ``Q``'s columns are orthonormal; block ``g`` contributes
    ``sizes[g] <= k_g`` columns (directions already spanned, relative singular value < ``tol``,
    are dropped). The span of the first ``g`` blocks of ``Q`` equals the span of the first ``g``
    inputs.
    """
    cols: list[torch.Tensor] = []
    sizes: list[int] = []
    for blk in blocks:
        b = blk.to(torch.float64)
        if cols:
            q = torch.cat(cols, 1)
            b = b - q @ (q.T @ b)
            b = b - q @ (q.T @ b)          # second pass: full re-orthogonalisation
        u, s, _ = torch.linalg.svd(b, full_matrices=False)
        ref = float(blk.to(torch.float64).norm(dim=0).max()) if blk.numel() else 0.0
        keep = s > tol * max(ref, 1e-300)
        # keep the order of the original block: Gram-Schmidt-like via QR on the kept part
        q_new, r = torch.linalg.qr(b)
        keep_cols = torch.diagonal(r).abs() > tol * max(ref, 1e-300)
        if int(keep_cols.sum()) != int(keep.sum()):
            q_new = u[:, keep]            # rank-deficient in a way QR cannot order: fall back to SVD
        else:
            q_new = q_new[:, keep_cols] * torch.sign(torch.diagonal(r)[keep_cols])
        cols.append(q_new)
        sizes.append(q_new.shape[1])
    return torch.cat(cols, 1), sizes
