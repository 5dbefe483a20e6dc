"""Exact Hessian-vector products (forward-over-reverse) and a Lanczos eigensolver for them.

For distances that do not vanish at ``w0`` (e.g. LPIPS between ``G(w0 + dw)`` and ``G(w0)``, whose
network does not give 0 at identical inputs after its own normalisations, or any loss with a
non-zero residual) the Gauss-Newton matrix is not the Hessian; there we use the Hessian itself,
one exact product at a time: ``H v = jvp(grad(D), (w0,), (v,))``. Lanczos with full
re-orthogonalisation is written here in torch (not ``scipy.sparse.linalg.eigsh``) so that the
iteration stays on the accelerator and in float64, and the step count is exactly what we ask for.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad, jvp

#: ``dw [N] -> scalar`` (a distance of the perturbed code to the reference)
ScalarFunction = Callable[[torch.Tensor], torch.Tensor]
#: ``v [N] -> H v [N]``
LinearOperator = Callable[[torch.Tensor], torch.Tensor]


def hvp(fn: ScalarFunction, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact ``H(x) v`` of a scalar function by forward-over-reverse differentiation. Shapes as ``x``."""
    return jvp(grad(fn), (x,), (v,))[1]


def masked_distance(distance: Callable[[torch.Tensor], torch.Tensor], w0: torch.Tensor,
                    mask: torch.Tensor) -> ScalarFunction:
    """Wrap ``distance(wplus [1,num_ws,w_dim]) -> scalar`` into a function of the flattened masked
    perturbation ``dw [L*w_dim]`` (``w = w0 + dw`` on the masked layers, ``w0`` elsewhere)."""
    if w0.dim() != 3 or w0.shape[0] != 1:
        raise ValueError(f"expected one W+ code [1,num_ws,w_dim], got {list(w0.shape)}")
    w0 = w0.detach()
    idx = torch.nonzero(mask, as_tuple=False).flatten().to(w0.device)
    shape = (1, int(mask.sum()), w0.shape[2])

    def fn(dw: torch.Tensor) -> torch.Tensor:
        delta = torch.zeros_like(w0).index_add(1, idx, dw.reshape(shape))
        return distance(w0 + delta)

    return fn


def mean_hvp_operator(fns: list[ScalarFunction], dim: int, device=None,
                      dtype=torch.float32) -> LinearOperator:
    """``v -> mean_i H_i v`` with ``H_i`` the Hessian of ``fns[i]`` at ``dw = 0`` (``dim`` coordinates)."""
    if not fns:
        raise ValueError("mean_hvp_operator needs at least one sample")
    zero = torch.zeros(dim, device=device, dtype=dtype)

    def op(v: torch.Tensor) -> torch.Tensor:
        vv = v.to(dtype)
        return torch.stack([hvp(f, zero, vv) for f in fns]).mean(0).to(v.dtype)

    return op


def lanczos_top_k(op: LinearOperator, dim: int, k: int, steps: int, device=None,
                  seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (largest algebraic) eigenpairs of a symmetric operator by ``steps`` Lanczos steps.

    Full re-orthogonalisation against every Lanczos vector (``steps x dim`` memory) keeps the Ritz
    vectors orthogonal in floating point. Stops early on an invariant subspace.

    Returns ``(eigenvalues [k] descending, vectors [dim,k])``.
    """
    if not 1 <= k <= dim:
        raise ValueError(f"k must be in [1,{dim}], got {k}")
    steps = min(max(steps, k), dim)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(dim, generator=gen, dtype=dtype).to(device)
    q = q / q.norm()
    basis = [q]
    alphas, betas = [], []
    for j in range(steps):
        w = op(basis[j]).to(dtype)
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        qs = torch.stack(basis, 1)
        w = w - qs @ (qs.T @ w)
        w = w - qs @ (qs.T @ w)
        beta = w.norm()
        if j == steps - 1 or float(beta) <= 1e-12 * max(float(alpha.abs()), 1e-300):
            break
        betas.append(beta)
        basis.append(w / beta)
    m = len(alphas)
    t = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[:m - 1])
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    evals, evecs = torch.linalg.eigh(t)
    order = torch.argsort(evals, descending=True)[:min(k, m)]
    vecs = torch.stack(basis[:m], 1) @ evecs[:, order]
    return evals[order], vecs


def dense_hessian(op: LinearOperator, dim: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """The full ``[dim,dim]`` matrix of an operator (column by column); for tests and small problems."""
    eye = torch.eye(dim, device=device, dtype=dtype)
    cols = [op(eye[:, i]) for i in range(dim)]
    h = torch.stack(cols, 1)
    return 0.5 * (h + h.T)
