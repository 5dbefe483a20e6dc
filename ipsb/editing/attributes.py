"""Named facial attributes read from 3DMM coefficients: yaw, pitch, smile, light direction, ...

An :class:`Attribute` is a linear readout of one coefficient group, in display units::

    value [B] = scale * coeffs[:, group] @ weights

Which coefficients mean "yaw" depends on the face model, so :func:`attribute_table` gives the table
of the face model in use:

* the toy world (:class:`~ipsb.backbone.toy.face_model.ToyFaceModel`): ``yaw``, ``pitch``, ``roll``
  (degrees), the six expression coefficients by name (``mouth_open``, ``smile``, ``mouth_wide``,
  ``brows``, ``frown``, ``jaw``), and the lighting: ``ambient`` (intensity), ``light_x``,
  ``light_y`` (direction) and ``warmth`` (colour);
* the Basel Face Model as Deep3DFaceRecon uses it (:class:`~ipsb.backbone.face_model.BFMFaceModel`):
  ``pitch``, ``yaw``, ``roll`` (its angles are about x, y, z), and from the 27 SH lighting
  coefficients (channel-major r9 g9 b9) ``ambient`` (mean DC term), ``light_x`` / ``light_y`` (mean
  first-order terms, signed so that positive lights the face from +x / +y) and ``warmth`` (red DC
  minus blue DC); its 64 expression coefficients have no names.

Any face model also takes ``group[i]``, one raw coefficient (e.g. ``exp[3]``, coefficient units).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

DEG = 180.0 / math.pi
#: Coefficient groups that describe attributes (what an edit may change); the rest is identity.
ATTRIBUTE_GROUPS = ("exp", "angle", "trans", "gamma")
#: Coefficient groups that describe identity.
IDENTITY_GROUPS = ("id", "tex")


@dataclass(frozen=True)
class Attribute:
    """``value = scale * coeffs[:, start:end] @ weights`` ``[B]``; ``weights`` has the group's width."""

    name: str
    group: str
    weights: tuple[float, ...]
    unit: str = ""
    scale: float = 1.0

    def read(self, coeffs: torch.Tensor, coeff_groups: dict) -> torch.Tensor:
        """3DMM coefficients ``[B,C]`` -> attribute values ``[B]`` (display units)."""
        a, b = coeff_groups[self.group]
        w = torch.tensor(self.weights, dtype=coeffs.dtype, device=coeffs.device)
        return self.scale * (coeffs[:, a:b] @ w)

    def to_coefficients(self, change: torch.Tensor, coeff_groups: dict, num_coeffs: int) -> torch.Tensor:
        """The smallest coefficient change ``[B,C]`` that changes this attribute by ``change [B]``
        (display units) and nothing orthogonal to it (``weights`` direction, least norm)."""
        a, b = coeff_groups[self.group]
        w = torch.tensor(self.weights, dtype=change.dtype, device=change.device)
        out = torch.zeros(change.shape[0], num_coeffs, dtype=change.dtype, device=change.device)
        out[:, a:b] = (change / self.scale)[:, None] * w / w.pow(2).sum()
        return out

    def label(self, value: float) -> str:
        """``"+10°"`` / ``"-0.25"`` for grid captions."""
        unit = "°" if self.unit == "deg" else ""
        return f"{value:+.0f}{unit}" if self.unit == "deg" else f"{value:+.2f}"


def _one_hot(width: int, index: int, sign: float = 1.0) -> tuple[float, ...]:
    return tuple(sign if i == index else 0.0 for i in range(width))


def _toy_table() -> dict[str, Attribute]:
    t = {"yaw": Attribute("yaw", "angle", _one_hot(3, 0), "deg", DEG),
         "pitch": Attribute("pitch", "angle", _one_hot(3, 1), "deg", DEG),
         "roll": Attribute("roll", "angle", _one_hot(3, 2), "deg", DEG)}
    for i, n in enumerate(("mouth_open", "smile", "mouth_wide", "brows", "frown", "jaw")):
        t[n] = Attribute(n, "exp", _one_hot(6, i))
    for i, n in enumerate(("ambient", "light_x", "light_y", "warmth")):
        t[n] = Attribute(n, "gamma", _one_hot(4, i))
    return t


def _bfm_table() -> dict[str, Attribute]:
    def sh(k: int, sign: float = 1.0) -> tuple[float, ...]:
        return tuple(sign / 3 if i % 9 == k else 0.0 for i in range(27))

    warm = tuple(0.5 if i == 0 else -0.5 if i == 18 else 0.0 for i in range(27))
    return {"pitch": Attribute("pitch", "angle", _one_hot(3, 0), "deg", DEG),
            "yaw": Attribute("yaw", "angle", _one_hot(3, 1), "deg", DEG),
            "roll": Attribute("roll", "angle", _one_hot(3, 2), "deg", DEG),
            "ambient": Attribute("ambient", "gamma", sh(0)),
            "light_x": Attribute("light_x", "gamma", sh(3, -1.0)),
            "light_y": Attribute("light_y", "gamma", sh(1, -1.0)),
            "warmth": Attribute("warmth", "gamma", warm)}


def attribute_table(face_model) -> dict[str, Attribute]:
    """The named attributes of ``face_model`` (module docstring); ``{}`` for an unknown model."""
    from ipsb.backbone.face_model import BFMFaceModel
    from ipsb.backbone.toy.face_model import ToyFaceModel

    if isinstance(face_model, ToyFaceModel):
        return _toy_table()
    if isinstance(face_model, BFMFaceModel):
        return _bfm_table()
    return {}


def get_attribute(name: str, face_model) -> Attribute:
    """A named attribute of ``face_model`` or ``group[i]``; ValueError naming the known ones."""
    table = attribute_table(face_model)
    if name in table:
        return table[name]
    groups = face_model.coeff_groups
    m = re.fullmatch(r"([A-Za-z_]+)\[(\d+)\]", name.strip())
    if m and m.group(1) in groups:
        a, b = groups[m.group(1)]
        i = int(m.group(2))
        if i < b - a:
            return Attribute(name, m.group(1), _one_hot(b - a, i))
        raise ValueError(f"attribute {name!r}: group {m.group(1)!r} has {b - a} coefficients (0..{b - a - 1})")
    raise ValueError(f"unknown attribute {name!r}; this face model knows {sorted(table) or 'no names'} "
                     f"and group[i] for the groups {sorted(groups)}")
