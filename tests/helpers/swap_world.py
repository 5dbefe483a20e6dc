"""Toy-world fixtures for the stage-1/2 tests: the toy backbone and an oracle basis.

The oracle basis is the toy generator's documented ground truth (``true_subspace`` of expression,
pose and lighting), orthonormalised, on W+ layers 3..7; it stands in for a computed basis where a
test checks stage mechanics rather than the basis itself (computing one takes minutes on CPU).
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from ipsb.backbone.bundle import FaceBackbone
from ipsb.basis.artifact import Basis

REPO = Path(__file__).resolve().parents[2]
TOY_BACKBONE = REPO / "lightning_configs" / "backbone" / "toy.yaml"
_CACHE: dict = {}


def toy_backbone(resolution: int = 32) -> FaceBackbone:
    """The toy backbone of ``lightning_configs/backbone/toy.yaml`` rendered at ``resolution`` px
    (32 by default: 4x cheaper than the shipped 64 px for mechanics tests; the toy networks resize
    their input to 64 themselves). Built once per process and resolution, LPIPS seeded."""
    key = ("bb", resolution)
    if key not in _CACHE:
        state = torch.random.get_rng_state()
        torch.manual_seed(0)                      # the random LPIPS backbone (pnet_rand) is seeded
        cfg = yaml.safe_load(TOY_BACKBONE.read_text())
        args = cfg["init_args"]
        args["generator"].setdefault("init_args", {})["resolution"] = resolution
        args["face_model"].setdefault("init_args", {})["image_size"] = resolution
        args["renderer"].setdefault("init_args", {})["image_size"] = resolution
        _CACHE[key] = FaceBackbone.from_config(cfg)
        torch.random.set_rng_state(state)
    return _CACHE[key]


def oracle_basis(generator, groups=("exp", "pose", "gamma")) -> Basis:
    """Ground-truth toy basis: orthonormal union of ``generator.true_subspace(g)`` per group."""
    blocks = [generator.true_subspace(g) for g in groups]
    q, _ = torch.linalg.qr(torch.cat(blocks, 1))
    ranges, start = {}, 0
    for g, b in zip(groups, blocks):
        ranges[g] = (start, start + b.shape[1])
        start += b.shape[1]
    rows = q.reshape(generator.num_ws, generator.w_dim, -1)
    mask = rows.abs().amax((1, 2)) > 1e-4
    q = (rows * mask[:, None, None]).reshape(q.shape)      # drop QR round-off outside the layers
    return Basis(q.float(), ranges, {}, {}, mask, generator.num_ws, generator.w_dim, None,
                 {"kind": "toy oracle (true_subspace)"})


def save_oracle_basis(path: Path) -> Path:
    return oracle_basis(toy_backbone().generator).save(path, overwrite=True)
