"""Per-sample Jacobians of attribute parameters and identity embeddings with respect to W+.

For an attribute read-out ``p(G(w))`` (3DMM pose / expression / lighting coefficients of the
generated image), the distance ``D(w) = ||p(G(w)) - p(G(w0))||^2`` vanishes at ``w0``, so its Hessian
there is exactly ``2 J^T J`` with ``J = dp/dw``. ``J`` costs one forward pass and ``P`` reverse-mode
passes, which ``torch.func.vmap`` batches over the rows of one ``torch.func.vjp`` (``chunk_size``
rows at a time, so backward memory stays bounded at 1024 px).

Every sample's output depends only on its own W+ code (the frozen networks run in eval mode), so a
cotangent ``e_k`` on all samples at once gives row ``k`` of every sample's Jacobian in one pass; a
cotangent that differs per sample (``c_b``) gives ``c_b^T J_b`` for each sample ``b``, which is what
the randomized identity estimates of :mod:`ipsb.basis.identity_rows` use. :class:`WplusDerivatives`
also gives Jacobian *columns* ``J_b t_b`` by forward mode (``torch.func.jvp``), one pass per
tangent.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.func import jvp, vjp, vmap

#: Up to this many Jacobian rows, ``vectorize=None`` loops instead of using vmap.
LOOP_MAX_ROWS = 4

#: ``wplus [B,num_ws,w_dim] -> outputs [B,P]``
WplusFunction = Callable[[torch.Tensor], torch.Tensor]


def _check(w0: torch.Tensor, mask: torch.Tensor) -> None:
    if w0.dim() != 3:
        raise ValueError(f"expected W+ codes [B,num_ws,w_dim], got shape {list(w0.shape)}")
    if mask.dtype != torch.bool or mask.shape != (w0.shape[1],):
        raise ValueError(f"layer mask must be bool [{w0.shape[1]}], got {mask.dtype} {list(mask.shape)}")


class WplusDerivatives:
    """One forward of ``fn`` at ``w0``, then Jacobian rows (reverse mode) and columns (forward mode)
    with respect to the masked W+ layers.

    Args:
        fn: ``wplus [B,num_ws,w_dim] -> [B,P]``; sample ``b``'s output may depend only on ``w[b]``.
        w0: W+ codes ``[B,num_ws,w_dim]``.
        mask: bool ``[num_ws]``, the layers to differentiate with respect to
            (``N = mask.sum() * w_dim`` coordinates, row-major over (masked layer, channel), the
            order of ``w[b, mask].reshape(-1)``).

    ``out`` ``[B,P]`` holds ``fn(w0)`` (detached).
    """

    def __init__(self, fn: WplusFunction, w0: torch.Tensor, mask: torch.Tensor):
        _check(w0, mask)
        self.w0 = w0.detach()
        self.rows_idx = torch.nonzero(mask.to(self.w0.device)).flatten()
        self._w_masked = self.w0.index_select(1, self.rows_idx)
        self._fn = fn
        out, self._pullback = vjp(self._masked_fn, self._w_masked)
        if out.dim() != 2 or out.shape[0] != self.w0.shape[0]:
            raise ValueError(f"the function must map [B,...] W+ codes to [B,P] outputs, got {list(out.shape)}")
        self.out = out.detach()

    def _masked_fn(self, w_masked: torch.Tensor) -> torch.Tensor:
        # only the masked rows are inputs of the vjp, so autograd skips the style (modulation weight)
        # gradients of the other layers: at 1024 px those are the costly high-resolution ones
        return self._fn(self.w0.index_copy(1, self.rows_idx, w_masked))

    @property
    def dim(self) -> int:
        """``N``, the number of masked W+ coordinates."""
        return self._w_masked[0].numel()

    def rows(self, cotangents: torch.Tensor, chunk_size: Optional[int] = None,
             vectorize: Optional[bool] = None) -> torch.Tensor:
        """``cotangents [R,B,P]`` -> ``[B,R,N]``: entry ``[b,r]`` is ``cotangents[r,b] @ J_b``.

        ``chunk_size`` rows are back-propagated together (``None``: all); ``vectorize``: ``True``
        vmap over rows, ``False`` a Python loop (for ops vmap lacks), ``None`` vmap when there are
        more than :data:`LOOP_MAX_ROWS` rows (for a handful, vmap's batching rules cost more than
        they save).
        """
        count, batch = cotangents.shape[0], self.w0.shape[0]
        if cotangents.dim() != 3 or cotangents.shape[1:] != self.out.shape:
            raise ValueError(f"cotangents must be [R,{batch},{self.out.shape[1]}], got {list(cotangents.shape)}")
        cotangents = cotangents.to(self.out.dtype)
        if vectorize is None:
            vectorize = count > LOOP_MAX_ROWS and chunk_size != 1
        if count == 0:
            return self.w0.new_zeros(batch, 0, self.dim)
        if vectorize:
            (grads,) = vmap(self._pullback, chunk_size=chunk_size)(cotangents)  # [R,B,L,w_dim]
        else:
            grads = torch.stack([self._pullback(cotangents[k])[0] for k in range(count)])
        return grads.reshape(count, batch, -1).transpose(0, 1)

    def columns(self, tangents: torch.Tensor, chunk_size: Optional[int] = None) -> torch.Tensor:
        """``tangents [Q,B,N]`` -> ``[B,P,Q]``: column ``q`` of sample ``b`` is ``J_b tangents[q,b]``.

        Forward mode (``torch.func.jvp``, vmapped over the ``Q`` tangents, ``chunk_size`` at a time):
        one forward-mode pass per tangent, no stored backward graph.
        """
        count, batch = tangents.shape[0], self.w0.shape[0]
        if tangents.dim() != 3 or tangents.shape[1:] != (batch, self.dim):
            raise ValueError(f"tangents must be [Q,{batch},{self.dim}], got {list(tangents.shape)}")
        if count == 0:
            return self.out.new_zeros(batch, self.out.shape[1], 0)
        tangents = tangents.to(self.w0.dtype).reshape(count, *self._w_masked.shape)

        def column(t: torch.Tensor) -> torch.Tensor:
            return jvp(self._masked_fn, (self._w_masked,), (t,))[1]

        cols = vmap(column, chunk_size=chunk_size)(tangents)                    # [Q,B,P]
        return cols.permute(1, 2, 0).detach()


def wplus_jacobian(fn: WplusFunction, w0: torch.Tensor, mask: torch.Tensor,
                   chunk_size: Optional[int] = None, vectorize: Optional[bool] = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobian of ``fn`` at ``w0`` restricted to the masked W+ layers.

    Args:
        fn: ``wplus [B,num_ws,w_dim] -> [B,P]``; sample ``b``'s output may depend only on ``w[b]``.
        w0: W+ codes ``[B,num_ws,w_dim]``.
        mask: bool ``[num_ws]``, the layers to differentiate with respect to.
        chunk_size, vectorize: see :meth:`WplusDerivatives.rows`.

    Returns:
        ``(outputs [B,P], J [B,P,L*w_dim])`` with ``L = mask.sum()``; ``J[b]`` is row-major over
        (masked layer, channel), the order of ``w[b, mask].reshape(-1)``.
    """
    d = WplusDerivatives(fn, w0, mask)
    batch, rows = d.out.shape
    eye = torch.eye(rows, dtype=d.out.dtype, device=d.out.device)
    return d.out, d.rows(eye.unsqueeze(1).expand(rows, batch, rows), chunk_size, vectorize)


def project_unit_jacobian(embedding: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    """Jacobian of ``e/||e||`` from the Jacobian of a raw embedding ``e``.

    ``d(e/||e||) = (I - u u^T) de / ||e||`` with ``u = e/||e||``: the component along the embedding
    itself is removed, since the identity distance ``D_id = 1 - cos`` cannot see it. For a unit
    ``e`` this is ``||e(w) - e0||^2 / 2``, so the Hessian of ``D_id`` at ``w0`` is ``J_u^T J_u``.

    The map acts on dimension 1 only, so it also turns Jacobian columns ``J t`` into ``J_u t``, and,
    the projection being symmetric, cotangents ``c`` into raw-embedding cotangents whose reverse pass
    gives ``c^T J_u`` (``[B,E,R]`` in, ``[B,E,R]`` out).

    Args: embedding ``[B,E]``, jac ``[B,E,N]``. Returns ``[B,E,N]``.
    """
    norm = embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)           # [B,1]
    u = embedding / norm
    along = torch.einsum("be,ben->bn", u, jac)                            # [B,N]
    return (jac - u.unsqueeze(2) * along.unsqueeze(1)) / norm.unsqueeze(2)

