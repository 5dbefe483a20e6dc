"""Build the deterministic stand-in state dict straight from a ``manifest_*.json`` fixture.

The golden fixtures' weights depend only on each key, shape and dtype (``det_weights``), so a
manifest alone rebuilds them at full size without the reference implementation.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

from helpers.det_weights import det_tensor


def read_manifest(path: str | Path) -> dict:
    """``{key: [shape, dtype]}`` from a manifest JSON file."""
    return json.loads(Path(path).read_text())


def state_from_manifest(manifest: dict, policy: str = "fan_in") -> "OrderedDict[str, torch.Tensor]":
    """Deterministic stand-in tensors for every manifest entry, in manifest order."""
    return OrderedDict((k, det_tensor(k, torch.empty(shape, dtype=getattr(torch, dtype)), policy))
                       for k, (shape, dtype) in manifest.items())
