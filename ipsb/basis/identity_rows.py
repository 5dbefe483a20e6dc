"""How the identity metric ``H_id = mean_i J_u,i^T J_u,i`` is estimated: exact, sketched or low-rank.

``J_u`` ``[E,N]`` is the Jacobian of the unit identity embedding (``E = 512`` for IR-SE50) with
respect to the masked W+ coordinates. The exact metric costs ``E`` reverse passes per sample, most
of a basis run at 1024 px (the attributes cost ``P_attr = 94``). Each option below returns *rows*
``R_i`` ``[r,N]`` whose Gram ``R_i^T R_i`` stands in for ``J_u,i^T J_u,i``, so the float64
accumulators and the eigensolver are the same for all of them:

* ``exact`` (default): ``R = J_u``, ``E`` reverse passes.
* ``sketch:k``: ``R = S J_u / sqrt(k)`` with ``S`` ``[k,E]`` standard Gaussian, drawn per sample:
  ``E[S^T S] / k = I``, so the estimate is unbiased; ``k`` reverse passes. Its error scales with the
  largest directions of ``H_id`` while the basis lives in its smallest ones (the directions that
  keep identity), so it needs ``k`` close to ``E`` for an accurate basis (``benchmarks/basis.py``).
* ``lowrank:q``: the randomized range finder of Halko, Martinsson & Tropp (2011, Alg. 4.1):
  ``Y = J_u Omega`` (``Omega`` ``[N,q]`` Gaussian; ``q`` forward-mode passes), ``Q = qr(Y)``,
  ``R = Q^T J_u`` (``q`` reverse passes). ``R^T R = J_u^T Q Q^T J_u`` is the projection of ``J_u``
  on its ``q`` dominant output directions: biased low by the tail ``sum_{j>q} sigma_j^2`` of ``J_u``'s
  spectrum, exact when ``q`` reaches its rank.

The random matrices of sample ``i`` come from a CPU generator seeded with ``seeds[i]`` (the basis
module derives it from the sample index), so a sample's rows do not depend on batch, rank, device
or on a resumed run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ipsb.basis.jacobian import WplusDerivatives, project_unit_jacobian

KINDS = ("exact", "sketch", "lowrank")


@dataclass(frozen=True)
class IdentityRows:
    """A parsed ``identity_rows`` option: ``kind`` in :data:`KINDS`, ``size`` = ``k`` / ``q`` (0 for exact)."""

    kind: str = "exact"
    size: int = 0

    @classmethod
    def parse(cls, spec: "str | IdentityRows") -> "IdentityRows":
        """``"exact"`` / ``"sketch:32"`` / ``"lowrank:64"`` -> IdentityRows (ValueError naming the option)."""
        if isinstance(spec, IdentityRows):
            return spec
        text = str(spec).strip()
        kind, _, size = text.partition(":")
        if kind == "exact" and not size:
            return cls()
        if kind in ("sketch", "lowrank") and size.isdigit() and int(size) >= 1:
            return cls(kind, int(size))
        raise ValueError(f"identity_rows must be 'exact', 'sketch:K' or 'lowrank:Q' (K, Q >= 1 rows per "
                         f"sample), got {text!r}")

    def __str__(self) -> str:
        return self.kind if self.kind == "exact" else f"{self.kind}:{self.size}"

    def passes(self, embedding_dim: int) -> dict[str, int]:
        """``{"reverse": rows, "forward": columns}`` per sample for an ``embedding_dim``-wide embedding."""
        if self.kind == "exact":
            return {"reverse": embedding_dim, "forward": 0}
        return {"reverse": self.size, "forward": self.size if self.kind == "lowrank" else 0}

    def check(self, embedding_dim: int) -> None:
        if self.kind != "exact" and self.size >= embedding_dim:
            raise ValueError(f"identity_rows '{self}' asks for {self.size} rows per sample but the identity "
                             f"embedding has only {embedding_dim}: use 'exact' (or fewer rows)")

    # ------------------------------------------------------------------------------------------
    def cotangents(self, derivs: WplusDerivatives, start: int, seeds: Sequence[int],
                   chunk_size: Optional[int] = None) -> tuple[torch.Tensor, int]:
        """Raw-embedding cotangents ``[B,E,r]`` whose reverse passes give the rows ``R`` (see module).

        Args:
            derivs: the probe's :class:`WplusDerivatives`; its outputs ``[:, start:]`` are the raw
                identity embedding ``e`` ``[B,E]``.
            seeds: one int per sample (the random draws of ``sketch`` / ``lowrank``).
            chunk_size: forward-mode columns computed together (``lowrank``).

        Returns ``(cotangents [B,E,r], forward passes spent)``.
        """
        emb = derivs.out[:, start:]
        batch, dim = emb.shape
        self.check(dim)
        if len(seeds) != batch:
            raise ValueError(f"need one seed per sample ({batch}), got {len(seeds)}")
        work = torch.promote_types(emb.dtype, torch.float32)
        if self.kind == "exact":
            eye = torch.eye(dim, dtype=work, device=emb.device).expand(batch, dim, dim)
            return project_unit_jacobian(emb.to(work), eye), 0
        if self.kind == "sketch":
            s = gaussian(seeds, (dim, self.size), emb.device, work) / self.size ** 0.5    # [B,E,k]
            return project_unit_jacobian(emb.to(work), s), 0
        omega = gaussian(seeds, (derivs.dim, self.size), emb.device, work)                 # [B,N,q]
        cols = derivs.columns(omega.permute(2, 0, 1), chunk_size)[:, start:].to(work)      # [B,E,q]
        q, _ = torch.linalg.qr(project_unit_jacobian(emb.to(work), cols))                 # [B,E,q]
        return project_unit_jacobian(emb.to(work), q), self.size


def gaussian(seeds: Sequence[int], shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """``[B,*shape]`` standard normal; sample ``b`` drawn in float32 from a CPU generator seeded with
    ``seeds[b]`` (the same numbers on every device), then moved to ``device`` / ``dtype``."""
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(draws).to(device=device, dtype=dtype)
