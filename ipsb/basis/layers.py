"""Which W+ layers a basis may move: a boolean mask ``[num_ws]`` from a config value.

The authors restrict the basis to layers 3..9 of the 18 FFHQ-1024 W+ rows (coarse/middle styles);
the fine layers that carry pore-level detail are never moved. A layer set is given as a list of
indices, an inclusive range string ``"3..9"``, or ``None`` (all layers).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

LayerSpec = Union[None, str, Sequence[int]]

#: The authors' choice for the 18-row FFHQ generator.
DEFAULT_LAYERS = "3..9"


def parse_layers(spec: LayerSpec, num_ws: int) -> list[int]:
    """``"3..9"`` / ``[3,4,5]`` / ``None`` -> sorted unique layer indices, each in ``[0,num_ws)``."""
    if spec is None:
        return list(range(num_ws))
    if isinstance(spec, str):
        parts = spec.split("..")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(f"layer range must look like '3..9' (inclusive), got {spec!r}")
        lo, hi = int(parts[0]), int(parts[1])
        if lo > hi:
            raise ValueError(f"layer range {spec!r} is empty (start > end)")
        idx = list(range(lo, hi + 1))
    else:
        idx = [int(i) for i in spec]
    if not idx:
        raise ValueError("the layer set is empty; give at least one W+ layer")
    bad = [i for i in idx if not 0 <= i < num_ws]
    if bad:
        raise ValueError(f"W+ layers {bad} are outside [0,{num_ws}) for a generator with num_ws={num_ws}")
    return sorted(set(idx))


def layer_mask(spec: LayerSpec, num_ws: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Boolean mask ``[num_ws]``, True on the layers the basis may move."""
    mask = torch.zeros(num_ws, dtype=torch.bool, device=device)
    mask[parse_layers(spec, num_ws)] = True
    return mask
