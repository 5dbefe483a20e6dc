"""Which direction edits yaw? Measured with the backbone's 3DMM regressor, for any direction set.

Basis directions and unsupervised components (SeFa, GANSpace) carry no attribute names. Here the
regressor says what each one does, on sampled codes ``w [N,num_ws,w_dim]``:

* :func:`coefficient_response`: ``R [D,C]``, the mean change of every 3DMM coefficient per unit
  step along each direction, by central differences ``(f(w + h v) - f(w - h v)) / 2h`` with ``f``
  = regressor(synthesis) and ``h`` = :func:`w_spread` (one standard deviation of W per coordinate:
  a secant over the range an edit uses, not the tangent at ``w``).
* :func:`combine_for_attribute`: the unit combination of some directions that changes one
  attribute (e.g. yaw) while holding the other attribute coefficients (the rest of pose,
  expression, lighting) still: the least-norm solution ``c = pinv(R_s^T) t_s`` of
  ``sum_i c_i R_s[i] = t_s``, with every coefficient standardised by its spread over the codes
  (so radians, expression units and SH terms weigh alike), ``t`` the attribute's own coefficient
  change (:meth:`~ipsb.editing.attributes.Attribute.to_coefficients`) and singular values under
  ``rtol`` of the largest dropped. This is how the StyleIPSB basis' ``yaw`` / ``pitch`` /
  ``smile`` / ``light_x`` directions are found: within the basis group that responds most to the
  attribute (:func:`attribute_directions`).
* :func:`pick_for_attribute`: the single direction (signed) whose response to the attribute is
  largest per unit step: how an unsupervised method's component is chosen for an attribute.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ipsb.editing.attributes import ATTRIBUTE_GROUPS, Attribute
from ipsb.editing.directions import DirectionSet


@torch.no_grad()
def coefficients_of(backbone, w: torch.Tensor, batch: int = 32, noise_mode: str = "const") -> torch.Tensor:
    """3DMM coefficients ``[N,C]`` of the images of W+ codes ``w [N,num_ws,w_dim]`` (batched)."""
    gen, out = backbone.generator, []
    for chunk in w.split(batch):
        out.append(backbone.regressor(gen.synthesis(chunk, noise_mode=noise_mode)))
    return torch.cat(out)


@torch.no_grad()
def w_spread(backbone, n: int = 1024, seed: int = 0) -> float:
    """Mean per-coordinate standard deviation of ``n`` mapped W codes (untruncated)."""
    w = backbone.sample_wplus(n, seed=seed)[:, 0]
    return float(w.std(0).mean())


@torch.no_grad()
def coefficient_response(backbone, directions: DirectionSet, codes: torch.Tensor, step: float,
                         names: Optional[Sequence[str]] = None, batch: int = 32) -> torch.Tensor:
    """``R [D,C]``: mean coefficient change per unit step along each direction (module docstring)."""
    names = list(names or directions.names)
    out = []
    for name in names:
        plus = coefficients_of(backbone, directions.apply(codes, name, step), batch)
        minus = coefficients_of(backbone, directions.apply(codes, name, -step), batch)
        out.append(((plus - minus) / (2 * step)).mean(0))
    return torch.stack(out)


def _attribute_rows(face_model) -> list[int]:
    groups = face_model.coeff_groups
    return [i for g in ATTRIBUTE_GROUPS if g in groups for i in range(*groups[g])]


def combine_for_attribute(response: torch.Tensor, attribute: Attribute, face_model, spread: torch.Tensor,
                          rtol: float = 1e-2) -> tuple[torch.Tensor, float]:
    """Weights ``c [D]`` (unit norm, sign: attribute increases) of the directions whose responses
    are ``response [D,C]``, and the attribute change per unit step of the combination."""
    rows = [i for i in _attribute_rows(face_model) if float(spread[i]) > 1e-6]
    target = attribute.to_coefficients(torch.ones(1, dtype=response.dtype), face_model.coeff_groups,
                                       response.shape[1])[0]
    if not any(float(target[i]) != 0 for i in rows):
        raise ValueError(f"the regressor's {attribute.name} does not vary over the sampled faces, so its "
                         f"direction cannot be measured")
    scale = spread[rows].to(response.dtype)
    a = response[:, rows] / scale                         # [D,P] standardised responses
    t = target[rows] / scale                              # [P]
    c = torch.linalg.pinv(a.T.double(), rtol=rtol).to(a.dtype) @ t
    if float(c.norm()) == 0:
        raise ValueError(f"no combination of these directions changes {attribute.name}")
    c = c / c.norm()
    rate = float(attribute.read((c @ response)[None], face_model.coeff_groups)[0])
    if rate < 0:
        c, rate = -c, -rate
    return c, rate


def pick_for_attribute(response: torch.Tensor, attribute: Attribute, face_model) -> tuple[int, float, float]:
    """``(index, sign, rate)``: the direction with the largest attribute change per unit step."""
    rates = attribute.read(response, face_model.coeff_groups)      # [D]
    i = int(rates.abs().argmax())
    return i, (1.0 if float(rates[i]) >= 0 else -1.0), abs(float(rates[i]))


def attribute_directions(backbone, directions: DirectionSet, attributes: Sequence[Attribute], codes: torch.Tensor,
                         step: Optional[float] = None, mode: str = "combine", groups: Optional[dict] = None,
                         method: Optional[str] = None, response: Optional[torch.Tensor] = None,
                         coeff_spread: Optional[torch.Tensor] = None) -> DirectionSet:
    """A :class:`DirectionSet` named by attribute, measured on ``codes`` with the regressor.

    ``mode="combine"``: per attribute, the least-norm combination (:func:`combine_for_attribute`)
    within the direction group (``groups = {name: [direction names]}``, default: the ``group:i``
    prefixes of the names) that responds most to the attribute. ``mode="pick"``: the single best
    direction (:func:`pick_for_attribute`). ``response`` (:func:`coefficient_response`) and
    ``coeff_spread`` (``[C]``, standard deviation of the coefficients over ``codes``) may be given
    to reuse a measurement. ``extras["rate"]`` holds the attribute change per unit step (to first
    order: the combination of the measured responses), ``extras["source"]`` what each direction
    was made of.
    """
    step = w_spread(backbone) if step is None else float(step)
    fm = backbone.face_model
    if response is None:
        response = coefficient_response(backbone, directions, codes, step)
    if coeff_spread is None:
        coeff_spread = coefficients_of(backbone, codes).std(0)
    if groups is None:
        groups = {}
        for n in directions.names:
            groups.setdefault(n.split(":")[0], []).append(n)
    vecs, rates, sources = [], [], []
    for attr in attributes:
        if mode == "pick":
            i, sign, rate = pick_for_attribute(response, attr, fm)
            vecs.append(sign * directions.vectors[i])
            sources.append(f"{'+' if sign > 0 else '-'}{directions.names[i]}")
        elif mode == "combine":
            def strength(members):
                idx = [directions.index(m) for m in members]
                return float(attr.read(response[idx], fm.coeff_groups).norm())
            best = max(groups, key=lambda g: strength(groups[g]))
            idx = [directions.index(m) for m in groups[best]]
            c, rate = combine_for_attribute(response[idx], attr, fm, coeff_spread)
            vecs.append(c @ directions.vectors[idx])
            sources.append(f"{best} (" + ", ".join(f"{v:+.2f}" for v in c.tolist()) + ")")
        else:
            raise ValueError(f"mode must be 'combine' or 'pick', got {mode!r}")
        rates.append(rate)
    return DirectionSet(method or directions.method, [a.name for a in attributes], torch.stack(vecs),
                        directions.layer_mask, directions.num_ws, directions.w_dim,
                        {"rate": torch.tensor(rates), "source": sources, "step": step})
