"""What makes a StyleIPSB basis good: explained energy per group and the identity step per attribute step.

* **Explained energy** (``Basis.explained_energy[g]``, in [0,1]): the share of group ``g``'s attribute
  energy its kept directions hold (:mod:`ipsb.basis.eigensolver`).
* **Identity step per attribute step** (:func:`attribute_identity_step`): move codes ``w0`` along the
  top direction of group ``g`` by a W+ length ``step``; the group's attributes move by ``d_attr`` and
  the identity embedding by ``d_id`` (means over ``w0`` of the L2 changes). A direction that edits the
  attribute and leaves the person alone has a small ``d_id / d_attr``. The toy acceptance in
  ``tests/basis/test_basis_toy.py`` is this measure with the toy's true coefficients as the attribute
  readout (``d_exp >= 10 d_id``); :func:`basis_report` reads the attributes with the 3DMM regressor,
  as a training run can.

The step is ``step_scale`` times the generator's W spread (:func:`w_spread`).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ipsb.basis.artifact import Basis


def w_spread(generator: nn.Module, n: int = 4096, seed: int = 0) -> float:
    """The generator's W spread: mean over dimensions of the std of mapped ``w`` (its ``w_std`` if it
    has one, else estimated from ``n`` seeded samples)."""
    w_std = getattr(generator, "w_std", None)
    if w_std is not None:
        return float(w_std)
    from ipsb.data.latents import sample_wplus

    with torch.no_grad():
        return float(sample_wplus(generator, n, seed, 1.0)[:, 0].std(0).mean())


@torch.no_grad()
def attribute_identity_step(basis: Basis, group: str, w0: Tensor, step: float,
                            attribute: Callable[[Tensor], Tensor], identity: Callable[[Tensor], Tensor]
                            ) -> tuple[float, float]:
    """``(d_attr, d_id)`` for a step of W+ length ``step`` along the top direction of ``group``.

    ``w0`` ``[B,num_ws,w_dim]``; ``attribute(w) -> [B,A]`` and ``identity(w) -> [B,D]`` read W+ codes
    (e.g. a regressor's columns of the group, an identity network, both on ``G(w)``).
    """
    v = basis.group_vectors(group)[:, 0].to(w0).reshape(1, basis.num_ws, basis.w_dim)
    w1 = w0 + step * v
    d_attr = (attribute(w1) - attribute(w0)).norm(dim=1).mean()
    d_id = (identity(w1) - identity(w0)).norm(dim=1).mean()
    return float(d_attr), float(d_id)


@torch.no_grad()
def basis_report(basis: Basis, generator: nn.Module, regressor: nn.Module, identity: nn.Module,
                 columns: Mapping[str, Sequence[int]], w0: Tensor, step: float,
                 noise_mode: str = "const") -> dict[str, float]:
    """``{"basis_energy/<g>", "basis_id_per_attr/<g>"}`` for every group of ``basis``.

    ``columns``: each group's 3DMM coefficient columns (``BasisModule.columns``); ``step``: the W+
    length of the step (:func:`attribute_identity_step`).
    """
    seen: list[tuple[Tensor, Tensor, Tensor]] = []      # (w, coefficients, embedding): w0 and the last code

    def read(w: Tensor) -> tuple[Tensor, Tensor]:
        """(coefficients, embedding) of ``G(w)``, each code read once (``w0`` once for every group)."""
        for code, coeffs, emb in seen:
            if code is w:
                return coeffs, emb
        image = generator.synthesis(w, noise_mode=noise_mode)
        entry = (w, regressor(image), identity(image))
        seen[:] = [e for e in seen if e[0] is w0][:1] + [entry]
        return entry[1], entry[2]

    out: dict[str, float] = {}
    for group in basis.groups:
        cols = list(columns[group])
        d_attr, d_id = attribute_identity_step(basis, group, w0, step, attribute=lambda w: read(w)[0][:, cols],
                                               identity=lambda w: read(w)[1])
        if group in basis.explained_energy:
            out[f"basis_energy/{group}"] = basis.explained_energy[group]
        out[f"basis_id_per_attr/{group}"] = d_id / d_attr if d_attr > 0 else float("inf")
    return out
