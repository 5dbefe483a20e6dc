"""Per-sample Jacobians of attribute parameters and identity embeddings with respect to W+.

For an attribute read-out ``p(G(w))`` (3DMM pose / expression / lighting coefficients of the
generated image), the distance ``D(w) = ||p(G(w)) - p(G(w0))||^2`` vanishes at ``w0``, so its Hessian
there is exactly ``2 J^T J`` with ``J = dp/dw``. ``J`` costs one forward pass and ``P`` reverse-mode
passes, which ``torch.func.vmap`` batches over the rows of one ``torch.func.vjp`` (``chunk_size``
rows at a time, so backward memory stays bounded at 1024 px).

Every sample's output depends only on its own W+ code (the frozen networks run in eval mode), so a
cotangent ``e_k`` on all samples at once gives row ``k`` of every sample's Jacobian in one pass.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.func import vjp, vmap

#: Up to this many Jacobian rows, ``vectorize=None`` loops instead of using vmap.
LOOP_MAX_ROWS = 4

#: ``wplus [B,num_ws,w_dim] -> outputs [B,P]``
WplusFunction = Callable[[torch.Tensor], torch.Tensor]


def _check(w0: torch.Tensor, mask: torch.Tensor) -> None:
    if w0.dim() != 3:
        raise ValueError(f"expected W+ codes [B,num_ws,w_dim], got shape {list(w0.shape)}")
    if mask.dtype != torch.bool or mask.shape != (w0.shape[1],):
        raise ValueError(f"layer mask must be bool [{w0.shape[1]}], got {mask.dtype} {list(mask.shape)}")


def wplus_jacobian(fn: WplusFunction, w0: torch.Tensor, mask: torch.Tensor,
                   chunk_size: Optional[int] = None, vectorize: Optional[bool] = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobian of ``fn`` at ``w0`` restricted to the masked W+ layers.

    Args:
        fn: ``wplus [B,num_ws,w_dim] -> [B,P]``; sample ``b``'s output may depend only on ``w[b]``.
        w0: W+ codes ``[B,num_ws,w_dim]``.
        mask: bool ``[num_ws]``, the layers to differentiate with respect to.
        chunk_size: rows of ``J`` back-propagated together (``None``: all ``P`` at once).
        vectorize: ``True``: ``vmap`` over rows; ``False``: a Python loop over rows (for ops vmap
            lacks); ``None``: ``vmap`` when there are more than :data:`LOOP_MAX_ROWS` rows (for a
            handful of rows, e.g. pose, vmap's batching rules cost more than they save).

    Returns:
        ``(outputs [B,P], J [B,P,L*w_dim])`` with ``L = mask.sum()``; ``J[b]`` is row-major over
        (masked layer, channel), the order of ``w[b, mask].reshape(-1)``.
    """
    _check(w0, mask)
    w0 = w0.detach()
    rows_idx = torch.nonzero(mask.to(w0.device)).flatten()

    def masked_fn(w_masked: torch.Tensor) -> torch.Tensor:
        # only the masked rows are inputs of the vjp, so autograd skips the style (modulation weight)
        # gradients of the other layers: at 1024 px those are the costly high-resolution ones
        return fn(w0.index_copy(1, rows_idx, w_masked))

    out, pullback = vjp(masked_fn, w0.index_select(1, rows_idx))
    if out.dim() != 2 or out.shape[0] != w0.shape[0]:
        raise ValueError(f"the function must map [B,...] W+ codes to [B,P] outputs, got {list(out.shape)}")
    batch, rows = out.shape
    eye = torch.eye(rows, dtype=out.dtype, device=out.device)
    cotangents = eye.unsqueeze(1).expand(rows, batch, rows)          # [P,B,P]
    if vectorize is None:
        vectorize = rows > LOOP_MAX_ROWS and chunk_size != 1
    if vectorize:
        (grads,) = vmap(pullback, chunk_size=chunk_size)(cotangents)  # [P,B,num_ws,w_dim]
    else:
        grads = torch.stack([pullback(cotangents[k])[0] for k in range(rows)])
    jac = grads.reshape(rows, batch, -1).transpose(0, 1)
    return out.detach(), jac


def project_unit_jacobian(embedding: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    """Jacobian of ``e/||e||`` from the Jacobian of a raw embedding ``e``.

    ``d(e/||e||) = (I - u u^T) de / ||e||`` with ``u = e/||e||``: the component along the embedding
    itself is removed, since the identity distance ``D_id = 1 - cos`` cannot see it. For a unit
    ``e`` this is ``||e(w) - e0||^2 / 2``, so the Hessian of ``D_id`` at ``w0`` is ``J_u^T J_u``.

    Args: embedding ``[B,E]``, jac ``[B,E,N]``. Returns ``[B,E,N]``.
    """
    norm = embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)           # [B,1]
    u = embedding / norm
    along = torch.einsum("be,ben->bn", u, jac)                            # [B,N]
    return (jac - u.unsqueeze(2) * along.unsqueeze(1)) / norm.unsqueeze(2)
