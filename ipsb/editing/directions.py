"""One interface for every editing method: a :class:`DirectionSet` of named unit directions in W+.

A direction is a vector ``v [num_ws*w_dim]`` (``wplus.flatten(1)`` layout) of unit length, zero
outside the set's ``layer_mask``; an edit is ``w + t * reshape(v)`` with ``t`` a step in W+ units.
The StyleIPSB basis (:meth:`DirectionSet.from_basis`, one direction per basis column, named
``group:i``) and the baselines of :mod:`ipsb.editing.baselines` (InterfaceGAN, SeFa, GANSpace) all
produce one, so the ``ipsb edit`` command and ``benchmarks/editing.py`` treat them alike.

W-space methods find directions ``u [w_dim]`` of one style vector; :meth:`DirectionSet.from_w`
places ``u`` on every chosen W+ row and rescales to unit W+ length (``u / sqrt(rows)`` per row), the
way those methods edit a W code on a layer range.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

from ipsb.basis.layers import LayerSpec, layer_mask


class DirectionSet:
    """Named unit directions in W+.

    Args:
        method: the method's display name (e.g. ``"StyleIPSB"``, ``"SeFa"``).
        names: one name per direction.
        vectors: ``[D, num_ws*w_dim]``; each row is normalised to unit length here.
        layer_mask: bool ``[num_ws]``, the rows the directions may move (rows outside must be 0).
        num_ws, w_dim: the generator's W+ shape.
        extras: method-specific tensors (``{"eigenvalues": [D]}``, ``{"w_directions": [D,w_dim]}``, ...).
    """

    def __init__(self, method: str, names: Sequence[str], vectors: torch.Tensor, layer_mask: torch.Tensor,
                 num_ws: int, w_dim: int, extras: Optional[dict] = None):
        self.method, self.num_ws, self.w_dim = str(method), int(num_ws), int(w_dim)
        names = [str(n) for n in names]
        if vectors.dim() != 2 or vectors.shape != (len(names), self.num_ws * self.w_dim):
            raise ValueError(f"{method}: vectors must be [{len(names)}, {self.num_ws * self.w_dim}], "
                             f"got {list(vectors.shape)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{method}: direction names must be unique, got {names}")
        mask = torch.as_tensor(layer_mask, dtype=torch.bool).cpu()
        if mask.shape != (self.num_ws,):
            raise ValueError(f"{method}: layer_mask must be bool [{self.num_ws}], got {list(mask.shape)}")
        rows = vectors.detach().float().cpu().reshape(len(names), self.num_ws, self.w_dim)
        if len(names) and bool((~mask).any()) and rows[:, ~mask].abs().amax() > 1e-5 * max(1.0, float(rows.abs().amax())):
            raise ValueError(f"{method}: directions move W+ rows outside their layer mask")
        norms = vectors.detach().float().cpu().norm(dim=1, keepdim=True)
        if len(names) and float(norms.min()) == 0:
            raise ValueError(f"{method}: a direction has zero length")
        self.names = names
        self.vectors = vectors.detach().float().cpu() / norms
        self.layer_mask = mask
        self.extras = dict(extras or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_basis(cls, basis, method: str = "StyleIPSB") -> "DirectionSet":
        """One direction per basis column, named ``group:i`` (``i`` counts within the group)."""
        names, cols = [], []
        for g, (a, b) in basis.groups.items():
            for i in range(b - a):
                names.append(f"{g}:{i}")
                cols.append(basis.V[:, a + i])
        return cls(method, names, torch.stack(cols).cpu(), basis.layer_mask.cpu(), basis.num_ws, basis.w_dim,
                   {"eigenvalues": torch.cat([basis.eigenvalues[g] for g in basis.groups])
                    if all(g in basis.eigenvalues for g in basis.groups) else None})

    @classmethod
    def from_w(cls, method: str, names: Sequence[str], w_directions: torch.Tensor, layers: LayerSpec,
               num_ws: int, w_dim: int, extras: Optional[dict] = None) -> "DirectionSet":
        """W directions ``[D,w_dim]`` applied on the W+ rows ``layers`` (``"3..7"``, a list, None = all)."""
        mask = layer_mask(layers, num_ws)
        u = w_directions.detach().float().cpu()
        full = torch.zeros(u.shape[0], num_ws, w_dim)
        full[:, mask] = u[:, None, :]
        return cls(method, names, full.flatten(1), mask, num_ws, w_dim, {**(extras or {}), "w_directions": u})

    def subset(self, names: Iterable[str], method: Optional[str] = None) -> "DirectionSet":
        """A set with only ``names`` (in that order)."""
        names = list(names)
        idx = [self.index(n) for n in names]
        return DirectionSet(method or self.method, names, self.vectors[idx], self.layer_mask, self.num_ws, self.w_dim)

    # ------------------------------------------------------------------ use
    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"{self.method} has no direction {name!r}; it has {self.names}")
        return self.names.index(name)

    def vector(self, name: str) -> torch.Tensor:
        """The direction ``[num_ws, w_dim]`` (unit Frobenius norm)."""
        return self.vectors[self.index(name)].reshape(self.num_ws, self.w_dim)

    def apply(self, w: torch.Tensor, name: str, step) -> torch.Tensor:
        """``w [B,num_ws,w_dim] + step * direction``; ``step`` a number or ``[B]``."""
        if w.dim() != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"w must be [B,{self.num_ws},{self.w_dim}], got {list(w.shape)}")
        step = torch.as_tensor(step, dtype=w.dtype, device=w.device).reshape(-1, 1, 1)
        return w + step * self.vector(name).to(w)

    def __repr__(self) -> str:
        rows = torch.nonzero(self.layer_mask).flatten().tolist()
        shown = ", ".join(self.names[:6]) + (", ..." if len(self.names) > 6 else "")
        return f"DirectionSet({self.method}: {len(self)} directions [{shown}], rows {rows})"
