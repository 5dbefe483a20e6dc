"""L_attr = L_geo + L_render: does the swap carry "source shape + target expression, pose, light"?

Both terms compare, through the frozen 3DMM (``backbone.face_model``) and renderer
(``backbone.renderer``), a *wanted* face built from the 3DMM fits of source (``^s``) and target
(``^t``) with the face built from the fit of the swap (``^st``). Groups (Deep3DFaceRecon names):
``id`` shape ``a_s``, ``exp`` ``a_e``, ``tex`` albedo ``a_a``, ``gamma`` illumination ``a_i``,
``angle`` + ``trans`` pose ``a_p``.

* ``L_geo`` = mean over vertices of the L2 distance between the posed meshes
  ``G3DMM(a_s^s, a_e^t, a_p^t)`` and ``G3DMM(a_s^st, a_e^st, a_p^st)`` (camera-space units).
* ``L_render`` = mean L1 between the renders ``R(a_s^s, a_e^t, a_a^t, a_i^t, a_p^t)`` and
  ``R(a_s^st, a_e^st, a_a^t, a_i^st, a_p^st)`` (images in [0,1], all pixels). The albedo is the
  target's in both, so skin colour does not pull the swap away from the source identity.

Groups the face model lacks are skipped in the mixing (a model without ``gamma`` renders both with
its own lighting). Coefficients are flat ``[B,C]`` vectors in the face model's layout.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

POSE = ("angle", "trans")


def mix_coeffs(face_model: nn.Module, base: torch.Tensor, overrides: dict[str, torch.Tensor],
               groups: Iterable[str]) -> torch.Tensor:
    """``base [B,C]`` with each named group (when the model has it) taken from ``overrides[group]``.

    ``overrides`` maps group -> a flat ``[B,C]`` vector to take that group from. Built with
    ``torch.cat`` (no in-place writes), so gradients flow to every source used.
    """
    layout = face_model.coeff_groups
    parts = face_model.split(base)
    for g in groups:
        if g in layout:
            a, b = layout[g]
            parts[g] = overrides[g][:, a:b]
    return face_model.merge(parts)


def wanted_coeffs(face_model: nn.Module, coeff_source: torch.Tensor, coeff_target: torch.Tensor) -> torch.Tensor:
    """``(a_s^s, a_e^t, a_a^t, a_i^t, a_p^t)`` as one flat vector ``[B,C]``."""
    return mix_coeffs(face_model, coeff_target, {"id": coeff_source}, ["id"])


def swapped_coeffs(face_model: nn.Module, coeff_swap: torch.Tensor, coeff_target: torch.Tensor) -> torch.Tensor:
    """``(a_s^st, a_e^st, a_a^t, a_i^st, a_p^st)``: the swap's fit with the target's albedo."""
    return mix_coeffs(face_model, coeff_swap, {"tex": coeff_target}, ["tex"])


def _geometries(face_model, coeff_source, coeff_target, coeff_swap):
    want = face_model(wanted_coeffs(face_model, coeff_source, coeff_target))
    got = face_model(swapped_coeffs(face_model, coeff_swap, coeff_target))
    return want, got


def _geo(want, got) -> torch.Tensor:
    return (want.vertices - got.vertices).norm(dim=-1).mean()


def _render(renderer, faces, want, got) -> torch.Tensor:
    img_want = renderer(want.vertices, faces, want.colors).image
    img_got = renderer(got.vertices, faces, got.colors).image
    return (img_want - img_got).abs().mean()


def _check(face_model, **coeffs) -> None:
    c = face_model.num_coeffs
    for name, t in coeffs.items():
        if t.dim() != 2 or t.shape[1] != c:
            raise ValueError(f"{name} 3DMM coefficients must be [B,{c}], got {list(t.shape)}")


def geometry_loss(face_model: nn.Module, coeff_source: torch.Tensor, coeff_target: torch.Tensor,
                  coeff_swap: torch.Tensor) -> torch.Tensor:
    """L_geo, a scalar >= 0: mean vertex L2 between wanted and swapped posed meshes."""
    _check(face_model, source=coeff_source, target=coeff_target, swap=coeff_swap)
    return _geo(*_geometries(face_model, coeff_source, coeff_target, coeff_swap))


def render_loss(face_model: nn.Module, renderer: nn.Module, coeff_source: torch.Tensor,
                coeff_target: torch.Tensor, coeff_swap: torch.Tensor) -> torch.Tensor:
    """L_render, a scalar in [0,1]: mean L1 between the wanted and swapped renders."""
    _check(face_model, source=coeff_source, target=coeff_target, swap=coeff_swap)
    return _render(renderer, face_model.faces, *_geometries(face_model, coeff_source, coeff_target, coeff_swap))


def attribute_losses(face_model: nn.Module, renderer: nn.Module, coeff_source: torch.Tensor,
                     coeff_target: torch.Tensor, coeff_swap: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"geo": L_geo, "render": L_render}``; all three coefficient tensors are ``[B,C]``."""
    _check(face_model, source=coeff_source, target=coeff_target, swap=coeff_swap)
    want, got = _geometries(face_model, coeff_source, coeff_target, coeff_swap)
    return {"geo": _geo(want, got), "render": _render(renderer, face_model.faces, want, got)}
