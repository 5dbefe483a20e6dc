"""Edits of one W+ code, as grid strips: along the basis, and 3DMM control through the stage-1 mapper.

:class:`Editor` works with any backbone (toy or official networks): it only calls the generator's
``synthesis``, the 3DMM regressor, the face model's coefficient layout and, for 3DMM control, a
trained stage-1 :class:`~ipsb.stages.mapping_module.MappingModule`.

* **Along the basis** (:meth:`Editor.direction_strip`, :meth:`Editor.attribute_strip`): a basis
  direction moved in steps of ``t * spread`` (``spread`` = one standard deviation of W per
  coordinate, :func:`~ipsb.editing.measure.w_spread`); or a named attribute (``yaw``, ``smile``,
  ``light_x``, ...) along the basis combination the regressor measures for it
  (:func:`~ipsb.editing.measure.attribute_directions`), each cell placed by bisection so that the
  regressor reads the requested change.
* **3DMM control** (:meth:`Editor.mapper_strip`): the mapper turns (source coefficients, target
  coefficients) into basis coordinates; the target is the code's own coefficients, measured by the
  regressor on ``G(w)``, with the requested change (:meth:`Editor.set_target`) or with some groups
  taken from a reference code (:meth:`Editor.transfer_target`). Each cell interpolates the target
  from the code's own coefficients (0) to the requested ones (1).
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import torch

from ipsb.editing.attributes import Attribute, attribute_table, get_attribute
from ipsb.editing.directions import DirectionSet
from ipsb.editing.grid import Strip
from ipsb.editing.measure import attribute_directions, coefficients_of, w_spread
from ipsb.editing.search import find_steps


class Editor:
    """Edits for one backbone. ``basis``: a :class:`~ipsb.basis.artifact.Basis` (strips along the
    basis); ``mapping``: a trained stage-1 module with ``edit(w_s, coeff_s, coeff_t)`` (3DMM control);
    ``measure_codes``: sampled codes (seeded) on which attribute directions are measured."""

    def __init__(self, backbone, basis=None, mapping=None, measure_codes: int = 16, truncation_psi: float = 0.7,
                 noise_mode: str = "const"):
        self.backbone, self.basis, self.mapping = backbone, basis, mapping
        gen = backbone.generator
        if basis is not None and (basis.num_ws, basis.w_dim) != (gen.num_ws, gen.w_dim):
            raise ValueError(f"the basis is for W+ [{basis.num_ws},{basis.w_dim}] but the generator has "
                             f"[{gen.num_ws},{gen.w_dim}]")
        self.directions = DirectionSet.from_basis(basis) if basis is not None else None
        self.measure_codes, self.truncation_psi, self.noise_mode = int(measure_codes), truncation_psi, noise_mode
        self._spread: Optional[float] = None
        self._attr_dirs: dict[str, DirectionSet] = {}
        self._measured: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        t = next(itertools.chain(self.backbone.buffers(), self.backbone.parameters()), None)
        return t.device if t is not None else torch.device("cpu")

    @property
    def spread(self) -> float:
        """One standard deviation of W per coordinate (the step unit of basis strips)."""
        if self._spread is None:
            self._spread = w_spread(self.backbone)
        return self._spread

    @torch.no_grad()
    def render(self, w: torch.Tensor) -> torch.Tensor:
        """``[B,num_ws,w_dim]`` -> images ``[B,3,R,R]`` in [-1,1]."""
        return torch.cat([self.backbone.generator.synthesis(c, noise_mode=self.noise_mode) for c in w.split(16)])

    @torch.no_grad()
    def coefficients(self, w: torch.Tensor) -> torch.Tensor:
        """The regressor's 3DMM coefficients ``[B,C]`` of ``G(w)``."""
        return coefficients_of(self.backbone, w, noise_mode=self.noise_mode)

    def attribute(self, name: str) -> Attribute:
        return get_attribute(name, self.backbone.face_model)

    def _need_basis(self) -> DirectionSet:
        if self.directions is None:
            raise ValueError("edits along the basis need a basis file (--basis)")
        return self.directions

    def measurement(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(codes [N,...], coefficient response of every basis direction [K,C], coefficients
        [N,C])`` on the measuring codes, measured once (``2 K N`` regressor reads)."""
        if self._measured is None:
            from ipsb.editing.measure import coefficient_response

            codes = self.backbone.sample_wplus(self.measure_codes, seed=0, truncation_psi=self.truncation_psi)
            codes = codes.to(self.device)
            response = coefficient_response(self.backbone, self._need_basis(), codes, self.spread)
            self._measured = (codes, response, self.coefficients(codes))
        return self._measured

    def attribute_direction(self, attribute: Attribute) -> DirectionSet:
        """The basis direction of ``attribute`` (module docstring), from :meth:`measurement`."""
        if attribute.name not in self._attr_dirs:
            codes, response, coeffs = self.measurement()
            self._attr_dirs[attribute.name] = attribute_directions(
                self.backbone, self._need_basis(), [attribute], codes, step=self.spread, response=response,
                coeff_spread=coeffs.std(0))
        return self._attr_dirs[attribute.name]

    def describe(self, attribute: Attribute) -> str:
        """``"yaw: pose (+0.89, -0.40, ...), 12.2 deg per unit step"`` (what the direction is made of)."""
        d = self.attribute_direction(attribute)
        unit = " deg" if attribute.unit == "deg" else ""
        return (f"{attribute.name}: basis group {d.extras['source'][0]}, "
                f"{float(d.extras['rate'][0]):.3g}{unit} per unit step")

    # ------------------------------------------------------------------ strips along the basis
    def strip_names(self, spec: str) -> list[str]:
        """A ``--along`` entry -> strip names: a basis group (all its directions), a direction
        ``group:i``, or an attribute name (``yaw``, ``exp[3]``)."""
        spec = spec.strip()
        dirs = self._need_basis()
        if spec in self.basis.groups:
            return [n for n in dirs.names if n.split(":")[0] == spec]
        if spec in dirs:
            return [spec]
        try:
            self.attribute(spec)
        except ValueError as e:
            raise ValueError(f"--along {spec!r} is neither a basis group ({list(self.basis.groups)}), a basis "
                             f"direction (e.g. {dirs.names[0]!r}) nor an attribute: {e}") from None
        return [spec]

    def is_direction(self, name: str) -> bool:
        return self.directions is not None and name in self.directions

    @torch.no_grad()
    def direction_strip(self, w: torch.Tensor, name: str, steps: Sequence[float]) -> Strip:
        """``w [1,num_ws,w_dim]`` moved by ``t * spread`` along basis direction ``name`` for each ``t``."""
        dirs = self._need_basis()
        t = torch.tensor(list(steps), dtype=w.dtype, device=w.device)
        codes = dirs.apply(w.expand(len(t), -1, -1), name, t * self.spread)
        return Strip(name, list(self.render(codes)), [f"{v:+.1f}σ" for v in steps])

    @torch.no_grad()
    def attribute_codes(self, w: torch.Tensor, attribute: Attribute, changes: Sequence[float]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``[n,num_ws,w_dim]`` whose regressor-read ``attribute`` differs from ``w``'s by
        ``changes`` (display units), along the attribute's basis direction; also the achieved change
        ``[n]`` and whether each was reached ``[n]``."""
        d = self.attribute_direction(attribute)
        vec = d.vector(attribute.name).to(w)
        change = torch.tensor(list(changes), dtype=w.dtype, device=w.device)
        groups = self.backbone.face_model.coeff_groups

        def measure(codes):
            return attribute.read(self.coefficients(codes), groups)

        res = find_steps(w.expand(len(change), -1, -1).contiguous(), vec, measure, change,
                         t0=self.spread * 0.5, t_max=self.spread * 4, iters=12)
        return w + res.step[:, None, None] * vec, res.change, res.reached

    def attribute_strip(self, w: torch.Tensor, name: str, changes: Sequence[float]) -> Strip:
        """Cells at the requested attribute changes; captions give the change (``*`` = out of reach)."""
        attr = self.attribute(name)
        codes, _, reached = self.attribute_codes(w, attr, changes)
        caps = [attr.label(c) + ("" if bool(r) or c == 0 else "*") for c, r in zip(changes, reached)]
        return Strip(name, list(self.render(codes)), caps)

    def attribute_spread(self, attribute: Attribute) -> float:
        """Standard deviation of the attribute over the measuring codes (regressor), display units."""
        _, _, coeffs = self.measurement()
        return float(attribute.read(coeffs, self.backbone.face_model.coeff_groups).std())

    # ------------------------------------------------------------------ 3DMM control through the mapper
    def _need_mapping(self):
        if self.mapping is None:
            raise ValueError("3DMM control (--set / --transfer) needs a trained stage-1 checkpoint (--mapping)")
        return self.mapping

    def set_target(self, coeffs: torch.Tensor, settings: Sequence[tuple[Attribute, str, float]]) -> torch.Tensor:
        """Target coefficients ``[B,C]``: ``coeffs`` with each ``(attribute, op, value)`` applied,
        ``op`` ``"="`` (absolute, display units), ``"+="`` or ``"-="`` (relative)."""
        fm = self.backbone.face_model
        out = coeffs.clone()
        for attr, op, value in settings:
            current = attr.read(out, fm.coeff_groups)
            change = {"=": value - current, "+=": torch.full_like(current, value),
                      "-=": torch.full_like(current, -value)}[op]
            out = out + attr.to_coefficients(change, fm.coeff_groups, out.shape[1])
        return out

    def transfer_target(self, coeffs: torch.Tensor, reference: torch.Tensor, groups: Sequence[str]) -> torch.Tensor:
        """``coeffs [B,C]`` with the coefficient ``groups`` (``exp``, ``angle``, ``gamma``; ``pose`` =
        angle + trans, ``lighting`` = gamma, ``expression`` = exp) taken from ``reference [B or 1,C]``."""
        fm_groups = self.backbone.face_model.coeff_groups
        out = coeffs.clone()
        for g in expand_transfer(groups, fm_groups):
            a, b = fm_groups[g]
            out[:, a:b] = reference[:, a:b]
        return out

    @torch.no_grad()
    def mapper_codes(self, w: torch.Tensor, target_fn: Callable[[torch.Tensor], torch.Tensor],
                     fractions: Sequence[float]) -> torch.Tensor:
        """Codes ``[n,num_ws,w_dim]``: the mapper's edit of ``w [1,...]`` towards
        ``coeff_s + f * (target_fn(coeff_s) - coeff_s)`` for each fraction ``f``."""
        mapping = self._need_mapping()
        coeff_s = self.coefficients(w)
        target = target_fn(coeff_s)
        f = torch.tensor(list(fractions), dtype=coeff_s.dtype, device=coeff_s.device)[:, None]
        coeff_t = coeff_s + f * (target - coeff_s)
        n = len(fractions)
        return mapping.edit(w.expand(n, -1, -1), coeff_s.expand(n, -1), coeff_t)

    def mapper_strip(self, w: torch.Tensor, label: str, target_fn, fractions: Sequence[float],
                     captions: Sequence[str], reference_image: Optional[torch.Tensor] = None) -> Strip:
        codes = self.mapper_codes(w, target_fn, fractions)
        images, caps = list(self.render(codes)), list(captions)
        if reference_image is not None:
            images, caps = [reference_image] + images, ["reference"] + caps
        return Strip(label, images, caps)


TRANSFER_ALIASES = {"pose": ("angle", "trans"), "expression": ("exp",), "lighting": ("gamma",), "light": ("gamma",)}


def expand_transfer(groups: Sequence[str], coeff_groups: dict) -> list[str]:
    """Transfer group names -> coefficient groups of the face model (ValueError naming the known ones)."""
    out: list[str] = []
    for g in groups:
        for name in TRANSFER_ALIASES.get(g, (g,)):
            if name not in coeff_groups or name in ("id", "tex"):
                raise ValueError(f"cannot transfer {g!r}: choose from exp/expression, angle, trans, pose, "
                                 f"gamma/lighting (this face model has {sorted(coeff_groups)})")
            if name not in out:
                out.append(name)
    return out


def default_strips(face_model, basis) -> list[str]:
    """What ``ipsb edit`` shows without ``--along``: pose (yaw, pitch), expression, lighting
    (intensity, direction, colour) as named attributes where the face model names them, and the
    basis' expression group otherwise."""
    table = attribute_table(face_model)
    names = [n for n in ("yaw", "pitch", "smile", "mouth_open") if n in table]
    if not any(n in table for n in ("smile", "mouth_open")) and "exp" in basis.groups:
        names += [f"exp:{i}" for i in range(min(2, basis.groups["exp"][1] - basis.groups["exp"][0]))]
    names += [n for n in ("ambient", "light_x", "light_y", "warmth") if n in table]
    return names
