"""What a generator's synthesis reads from each W+ row: the per-row linear "style" maps SeFa factorises.

SeFa (Shen & Zhou, CVPR 2021) factorises the weights ``A`` of the affine layers that turn a W row
into the styles of the synthesis network (StyleGAN2's ``modulation`` / NVlabs' ``affine``). This
module returns those weights per W+ row, ``{row: A_row [M_row, w_dim]}``, for the generators ipsb
knows:

* :class:`~ipsb.backbone.stylegan2.StyleGAN2Generator` (rosinality layout, also what NVlabs pickles
  load into): every ``ModulatedConv2d`` reading row ``r`` contributes its ``modulation.weight``
  ``[in_channels, w_dim]`` times its equalised-lr scale. Row ``0`` feeds ``conv1``, row ``1``
  ``to_rgb1`` and ``convs[0]``, row ``2k+2`` ``convs[2k+1]``, row ``2k+3`` ``to_rgbs[k]`` and
  ``convs[2k+2]``.
* :class:`~ipsb.backbone.toy.generator.ToyGenerator`: the toy synthesis has no modulated
  convolutions; what it reads from a row is linear up to its output nonlinearity. Coefficient group
  ``g`` reads ``u = (w_row - w_avg) / w_std`` of its rows through ``readout_g`` (pre-``tanh``), the
  background reads row 8 through ``0.8 * readout_background`` (pre-sigmoid) and the detail texture
  reads row 9 through ``readout_detail`` (pre-``tanh``). So the equivalent style map of row ``r`` is
  the stack of the ``w_dim``-column blocks of those readouts that belong to row ``r``, divided by
  ``w_std``; coefficients the toy holds fixed (``coeff_scale == 0``, the depth translation) are left
  out because they move nothing.

:func:`toy_readout_maps` gives the toy's coefficient readouts in the flattened W+ layout, which the
ground-truth "oracle" edits and swaps of the benchmarks solve against.
"""
from __future__ import annotations

import torch


def _is_toy(generator) -> bool:
    return all(hasattr(generator, a) for a in ("layer_groups", "w_std", "readout_background", "coeff_scale"))


def toy_readout_maps(generator) -> dict[str, torch.Tensor]:
    """``{coefficient group: M_g [c_g, num_ws*w_dim]}`` for a toy generator: the pre-``tanh`` readout of
    group ``g`` is ``(wplus - w_avg).flatten(1) @ M_g.T`` (``w_avg`` repeated over rows); rows of
    coefficients the toy holds fixed are dropped."""
    if not _is_toy(generator):
        raise ValueError(f"toy_readout_maps needs the toy generator, got {type(generator).__name__}")
    num_ws, w_dim = generator.num_ws, generator.w_dim
    slices = generator.face_model.coeff_groups
    out = {}
    for name, (a0, b0) in slices.items():
        a = getattr(generator, f"readout_{name}")[generator.coeff_scale[a0:b0] != 0]
        full = torch.zeros(a.shape[0], num_ws, w_dim, dtype=a.dtype, device=a.device)
        for j, row in enumerate(generator.layer_groups[name]):
            full[:, row] = a[:, j * w_dim:(j + 1) * w_dim]
        out[name] = full.flatten(1) / generator.w_std
    return out


def _toy_style_weights(generator) -> dict[int, torch.Tensor]:
    w_dim = generator.w_dim
    rows: dict[int, list[torch.Tensor]] = {r: [] for r in range(generator.num_ws)}
    for m in toy_readout_maps(generator).values():
        blocks = m.reshape(m.shape[0], generator.num_ws, w_dim)
        for r in range(generator.num_ws):
            if blocks[:, r].abs().amax() > 0:
                rows[r].append(blocks[:, r])
    rows[8].append(0.8 * generator.readout_background / generator.w_std)
    rows[9].append(generator.readout_detail / generator.w_std)
    return {r: torch.cat(v, 0) for r, v in rows.items() if v}


def _stylegan2_style_weights(generator) -> dict[int, torch.Tensor]:
    rows: dict[int, list[torch.Tensor]] = {}

    def add(row: int, modulated_conv) -> None:
        lin = modulated_conv.modulation
        rows.setdefault(row, []).append(lin.weight * lin.scale)

    add(0, generator.conv1.conv)
    add(1, generator.to_rgb1.conv)
    for k, to_rgb in enumerate(generator.to_rgbs):
        add(2 * k + 1, generator.convs[2 * k].conv)
        add(2 * k + 2, generator.convs[2 * k + 1].conv)
        add(2 * k + 3, to_rgb.conv)
    return {r: torch.cat(v, 0) for r, v in sorted(rows.items())}


def style_weights(generator) -> dict[int, torch.Tensor]:
    """``{W+ row: A_row [M_row, w_dim]}``: the linear maps from each W+ row to what synthesis reads
    (module docstring). ValueError for a generator of another kind."""
    if _is_toy(generator):
        return {r: a.detach() for r, a in _toy_style_weights(generator).items()}
    if all(hasattr(generator, a) for a in ("conv1", "to_rgb1", "convs", "to_rgbs")):
        return {r: a.detach() for r, a in _stylegan2_style_weights(generator).items()}
    raise ValueError(f"SeFa needs the style (modulation) weights of the generator; ipsb knows them for the "
                     f"toy generator and StyleGAN2Generator, not for {type(generator).__name__}")
