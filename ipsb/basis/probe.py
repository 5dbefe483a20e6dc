"""Attribute and identity Jacobians of a frozen backbone at W+ codes: the per-batch work of the basis.

``AttributeProbe(w0)`` runs ``image = generator.synthesis(w)``, reads the 3DMM coefficient columns of
every attribute group from ``regressor(image)`` and the identity embedding from ``identity(image)``,
all in one forward, and returns each group's Jacobian with respect to the masked W+ layers
(identity rows projected orthogonally to the embedding, see :func:`project_unit_jacobian`). The
identity rows are the exact Jacobian or a cheaper estimate of its Gram (``identity_rows``, see
:mod:`ipsb.basis.identity_rows`); all rows of a batch go through one vmapped reverse pass.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from ipsb.basis.identity_rows import IdentityRows
from ipsb.basis.jacobian import WplusDerivatives

#: Which 3DMM coefficient groups (``FaceModel.coeff_groups`` names) each basis group reads.
DEFAULT_ATTRIBUTE_GROUPS: dict[str, list[str]] = {"pose": ["angle"], "exp": ["exp"], "light": ["gamma"]}
IDENTITY = "id"


def coefficient_columns(coeff_groups: Mapping[str, Sequence[int]],
                        attribute_groups: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """``{basis group: [coefficient column indices]}`` from the face model's ``coeff_groups``."""
    out = {}
    for name, parts in attribute_groups.items():
        if name == IDENTITY:
            raise ValueError(f"'{IDENTITY}' is reserved for the identity embedding; rename that attribute group")
        cols: list[int] = []
        for part in parts:
            if part not in coeff_groups:
                raise ValueError(f"attribute group {name!r} reads 3DMM group {part!r}, but the face model only "
                                 f"has {sorted(coeff_groups)}")
            a, b = coeff_groups[part]
            cols += list(range(int(a), int(b)))
        if not cols:
            raise ValueError(f"attribute group {name!r} reads no coefficients")
        out[name] = cols
    return out


class AttributeProbe(nn.Module):
    """W+ codes -> ``{group: J [B,P_g,N]}`` (plus ``"id"`` when an identity network is given).

    Args:
        generator: :class:`~ipsb.backbone.interfaces.Generator` (frozen).
        regressor: image ``[B,3,R,R]`` in [-1,1] -> 3DMM coefficients ``[B,C]`` (frozen).
        columns: ``{group: coefficient indices}`` (see :func:`coefficient_columns`).
        identity: image -> embedding ``[B,E]`` (frozen) or ``None``.
        mask: bool ``[num_ws]`` layers to differentiate with respect to (``N = mask.sum() * w_dim``).
        chunk_size: Jacobian rows per reverse pass (bounds memory at 1024 px).
        noise_mode: generator noise; ``const`` keeps ``G`` deterministic so ``D(w0) = 0``.
        vectorize: see :meth:`~ipsb.basis.jacobian.WplusDerivatives.rows`.
        identity_rows: ``exact`` | ``sketch:k`` | ``lowrank:q`` (:mod:`ipsb.basis.identity_rows`).

    After each call, ``last_passes`` holds ``{"reverse": rows, "forward": columns}`` per sample.
    """

    def __init__(self, generator: nn.Module, regressor: nn.Module, columns: Mapping[str, Sequence[int]],
                 identity: Optional[nn.Module], mask: torch.Tensor, chunk_size: Optional[int] = 16,
                 noise_mode: str = "const", vectorize: Optional[bool] = None,
                 identity_rows: "str | IdentityRows" = "exact"):
        super().__init__()
        self.identity_rows = IdentityRows.parse(identity_rows)
        self.last_passes: dict[str, int] = {}
        self.generator, self.regressor, self.identity = generator, regressor, identity
        self.columns = {g: list(c) for g, c in columns.items()}
        self.register_buffer("mask", mask.to(torch.bool).clone(), persistent=False)
        self.chunk_size, self.noise_mode, self.vectorize = chunk_size, noise_mode, vectorize
        self._rows = {}
        start = 0
        for g, c in self.columns.items():
            self._rows[g] = (start, start + len(c))
            start += len(c)
        self.register_buffer("_index", torch.tensor([i for c in self.columns.values() for i in c], dtype=torch.long),
                             persistent=False)

    @property
    def groups(self) -> list[str]:
        return list(self.columns) + ([IDENTITY] if self.identity is not None else [])

    def readout(self, wplus: torch.Tensor) -> torch.Tensor:
        """``wplus [B,num_ws,w_dim]`` -> ``[B, sum P_g (+ E)]``: selected coefficients, then the embedding."""
        image = self.generator.synthesis(wplus, noise_mode=self.noise_mode)
        coeffs = self.regressor(image)
        out = coeffs.index_select(1, self._index)
        if self.identity is not None:
            out = torch.cat([out, self.identity(image).to(out.dtype)], 1)
        return out

    def forward(self, w0: torch.Tensor, seeds: Optional[Sequence[int]] = None) -> dict[str, torch.Tensor]:
        """W+ ``[B,num_ws,w_dim]`` -> ``{group: J [B,P_g,N]}`` in ``w0``'s dtype.

        ``"id"`` holds rows ``[B,r,N]`` whose Gram estimates ``J_u^T J_u`` (``r = E`` for ``exact``).
        ``seeds`` (one int per sample) drive the random draws of ``sketch`` / ``lowrank``; default
        ``0..B-1``.
        """
        derivs = WplusDerivatives(self.readout, w0, self.mask)
        batch, width = derivs.out.shape
        n = self._index.numel()
        eye = torch.eye(width, dtype=derivs.out.dtype, device=derivs.out.device)
        cotangents = [eye[:n].unsqueeze(1).expand(n, batch, width)]
        forward = 0
        if self.identity is not None:
            seeds = list(range(batch)) if seeds is None else [int(s) for s in seeds]
            cot, forward = self.identity_rows.cotangents(derivs, n, seeds, self.chunk_size)   # [B,E,r]
            full = cot.new_zeros(cot.shape[2], batch, width)
            full[:, :, n:] = cot.permute(2, 0, 1)
            cotangents.append(full.to(derivs.out.dtype))
        rows = derivs.rows(torch.cat(cotangents), self.chunk_size, self.vectorize)             # [B,R,N]
        self.last_passes = {"reverse": rows.shape[1], "forward": forward}
        result = {g: rows[:, a:b] for g, (a, b) in self._rows.items()}
        if self.identity is not None:
            result[IDENTITY] = rows[:, n:]
        return result
