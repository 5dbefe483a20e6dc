"""What produces the swaps the harness evaluates (one table row each).

A :class:`SwapMethod` maps aligned ``source``/``target`` batches ``[B,3,S,S]`` in [-1,1] to a swap
batch of the same shape and range; its ``name`` labels the table row. Swaps the *data* already holds
(FF++'s own manipulated videos, a folder of precomputed swaps: ``batch["swap"]``) need no method: the
evaluator rows them under its ``data_swaps_name``.

* :class:`CopyTarget` / :class:`CopySource` -- trivial bounds (swap = target: zero pose/expression
  error, target identity; swap = source: source identity, source pose/expression). Useful sanity
  rows and test oracles.
* :class:`IpsbSwapper` -- the ipsb swapper (:class:`ipsb.swap.FaceSwapper`) from stage checkpoints;
  the final (stage 3) result, or ``output: stage1 | stage2``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ipsb.backbone.bundle import FaceBackbone


class SwapMethod(nn.Module):
    """source, target ``[B,3,S,S]`` in [-1,1] -> swap ``[B,3,S,S]`` in [-1,1]; ``name`` labels the row."""

    def __init__(self, name: str):
        super().__init__()
        if not name or not isinstance(name, str):
            raise ValueError(f"a swap method needs a non-empty name, got {name!r}")
        self.name = name

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class CopyTarget(SwapMethod):
    """swap = target (lower bound on pose/expression error; identity is the target's)."""

    def __init__(self, name: str = "copy target"):
        super().__init__(name)

    def forward(self, source, target):
        return target


class CopySource(SwapMethod):
    """swap = source (identity bound; pose/expression are the source's)."""

    def __init__(self, name: str = "copy source"):
        super().__init__(name)

    def forward(self, source, target):
        return source


class IpsbSwapper(SwapMethod):
    """ipsb's :class:`~ipsb.swap.FaceSwapper` on aligned crops (resized to/from its resolution).

    Args: ``mapping_ckpt``, ``detail_ckpt``, ``blend_ckpt`` (None: no stage 3) and ``backbone`` (in a
    config: a backbone YAML path relative to that config file, or its ``{class_path, init_args}``;
    from Python also a built one) -- as ``FaceSwapper.from_checkpoints``; ``swapper_args`` -- its
    constructor options (``inversion``, ``invert_steps``...); ``output`` -- ``final``, ``stage2`` or
    ``stage1``; ``swapper`` -- an already built FaceSwapper instead of the checkpoints (Python use).

    Inversion by optimisation needs gradients: inputs are cloned out of inference mode, so it also
    runs under Lightning's ``trainer.test`` (which uses ``torch.inference_mode``).
    """

    def __init__(self, mapping_ckpt: Optional[str] = None, detail_ckpt: Optional[str] = None,
                 blend_ckpt: Optional[str] = None, backbone: Optional[FaceBackbone] = None,
                 swapper_args: Optional[dict] = None, output: str = "final", name: str = "StyleIPSB (ipsb)",
                 swapper: Optional[nn.Module] = None):
        super().__init__(name)
        if output not in ("final", "stage2", "stage1"):
            raise ValueError(f"IpsbSwapper.output must be final, stage2 or stage1, got {output!r}")
        if swapper is None:
            if mapping_ckpt is None or detail_ckpt is None or backbone is None:
                raise ValueError("IpsbSwapper needs mapping_ckpt, detail_ckpt and backbone (or a built swapper)")
            from ipsb.swap import FaceSwapper

            swapper = FaceSwapper.from_checkpoints(mapping_ckpt, detail_ckpt, blend_ckpt, backbone,
                                                   **(swapper_args or {}))
        self.swapper = swapper
        self.output = output

    def forward(self, source, target):
        from ipsb.swap import swap_pairs

        size = target.shape[-1]
        with torch.inference_mode(False):
            out = swap_pairs(self.swapper, source.clone(), target.clone())[self.output]
        if out.shape[-1] != size:
            out = torch.nn.functional.interpolate(out, size=(size, size), mode="bilinear", align_corners=False,
                                                  antialias=out.shape[-1] > size)
        return out.clamp(-1, 1)
