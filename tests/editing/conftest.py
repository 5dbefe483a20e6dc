"""Fixtures of the editing tests: the 32 px toy backbone and a small StyleIPSB basis computed here.

The basis is the toy basis config (``lightning_configs/toy/basis.yaml``: layers 3..7, groups pose /
exp / light, k, ridge delta) solved on 8 samples with the trained toy regressor and identity network,
once per session (a few seconds on one thread).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers.swap_world import toy_backbone

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[2] / "lightning_configs" / "toy" / "basis.yaml")
                        .read_text())["model"]["init_args"]


def small_toy_basis(backbone, samples: int = 8):
    from ipsb.basis.accumulator import GramAccumulator
    from ipsb.basis.layers import layer_mask
    from ipsb.basis.probe import AttributeProbe, coefficient_columns
    from ipsb.basis.solve import solve_basis

    gen = backbone.generator
    mask = layer_mask(CONFIG["layers"], gen.num_ws)
    probe = AttributeProbe(gen, backbone.regressor, coefficient_columns(backbone.face_model.coeff_groups,
                                                                        CONFIG["groups"]), backbone.identity, mask)
    acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim)
    for chunk in backbone.sample_wplus(samples, seed=CONFIG["seed"], truncation_psi=CONFIG["truncation_psi"]).split(4):
        acc.update(probe(chunk))
    return solve_basis(acc.mean(), CONFIG["k"], mask, gen.w_dim, delta=CONFIG["delta"],
                       relative_delta=CONFIG["relative_delta"], config={"groups": CONFIG["groups"]})


@pytest.fixture(scope="session")
def toy32():
    return toy_backbone(32)


@pytest.fixture(scope="session")
def toy_basis_file(toy32, tmp_path_factory):
    """``(Basis, path)`` of the small toy basis."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        basis = small_toy_basis(toy32)
    finally:
        torch.set_num_threads(threads)
    path = basis.save(tmp_path_factory.mktemp("edit_basis") / "basis.pt")
    return basis, path
