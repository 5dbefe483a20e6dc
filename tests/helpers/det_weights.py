"""Deterministic stand-in weights, the rule the golden fixtures were made with.

Rule per state-dict entry (key, tensor): seed = crc32(key); integer tensors -> zeros;
``running_var`` -> 1 + 0.1 rand; ``running_mean`` -> 0.1 randn; dim >= 2 -> randn (policy "unit")
or randn / sqrt(fan_in) (policy "fan_in"); dim <= 1 ending in ``weight`` -> 1 + 0.1 randn;
other dim <= 1 -> 0.1 randn. Drawn in float32, then cast to the entry's dtype.
"""
from __future__ import annotations

import math
import zlib
from collections import OrderedDict

import torch


def det_tensor(key: str, like: torch.Tensor, policy: str = "fan_in") -> torch.Tensor:
    """The stand-in value for one entry."""
    if policy not in ("fan_in", "unit"):
        raise ValueError(f"unknown policy {policy!r}")
    shape = tuple(like.shape)
    if not like.dtype.is_floating_point:
        return torch.zeros(shape, dtype=like.dtype)
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    if key.endswith("running_var"):
        out = 1 + 0.1 * torch.rand(shape, generator=gen)
    elif key.endswith("running_mean"):
        out = 0.1 * torch.randn(shape, generator=gen)
    elif len(shape) >= 2:
        out = torch.randn(shape, generator=gen)
        if policy == "fan_in":
            out = out / math.sqrt(math.prod(shape[1:]))
    elif key.endswith("weight"):
        out = 1 + 0.1 * torch.randn(shape, generator=gen)
    else:
        out = 0.1 * torch.randn(shape, generator=gen)
    return out.to(like.dtype)


def det_state_dict(state: dict, policy: str = "fan_in", keep=lambda key: False) -> "OrderedDict[str, torch.Tensor]":
    """Stand-in state dict; entries where ``keep(key)`` is true keep their current value."""
    return OrderedDict((k, v.clone() if keep(k) else det_tensor(k, v, policy)) for k, v in state.items())


def manifest(state: dict) -> dict:
    """key -> [shape, dtype] (the form of the ``manifest_*.json`` fixtures)."""
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items()}
