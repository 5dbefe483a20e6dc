"""The basis in the toy world, against the toy's ground truth.

``ToyGenerator.true_subspace("pose")`` spans the W+ directions that move the toy's pose (angle +
image-plane translation); ``coefficients(wplus)`` is the true 3DMM readout. Two levels:

* the basis pipeline (Jacobians over layers 3..7, accumulation, eigensolver, union, W+ layout)
  with the toy's exact coefficient readout as the attribute network recovers the true pose and
  expression subspaces;
* the acceptance form: the trained toy regressor and identity encoder, the generalized problem
  with the settings of ``lightning_configs/toy/basis.yaml`` (layers, groups, k, delta): the pose
  group holds >= 0.95 of the true pose subspace, and a step along the top expression direction
  moves the toy expression >= 10x more than the toy identity embedding. Default suite: 16 samples
  drawn here; ``slow``: ``ipsb fit`` with the config itself (64 samples), checked on its artifact.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import ipsb.backbone.toy as toy
from ipsb.backbone.interfaces import freeze
from ipsb.basis.accumulator import GramAccumulator
from ipsb.basis.artifact import Basis
from ipsb.basis.jacobian import wplus_jacobian
from ipsb.basis.layers import layer_mask
from ipsb.basis.probe import AttributeProbe, coefficient_columns
from ipsb.basis.solve import solve_basis
from ipsb.eval.basis_measures import attribute_identity_step, w_spread

CONFIG_PATH = Path(__file__).resolve().parents[2] / "lightning_configs" / "toy" / "basis.yaml"
CONFIG = yaml.safe_load(CONFIG_PATH.read_text())["model"]["init_args"]
ORACLE_GROUPS = {"pose": ["angle", "trans"], "exp": ["exp"]}
STEP = 0.3   # expression step, in units of the toy's w spread


def _energy(v: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of the true subspace's energy inside span(v) (both orthonormal)."""
    return float((v.double().T @ true.double()).pow(2).sum() / true.shape[1])


def _expression_step(gen, ident, basis: Basis, w0: torch.Tensor) -> tuple[float, float]:
    """Mean change of the true expression coefficients and of the identity embedding over ``w0``
    for a step of ``STEP * w_std`` along the top expression direction."""
    a, b = gen.face_model.coeff_groups["exp"]
    return attribute_identity_step(basis, "exp", w0, STEP * w_spread(gen),
                                   attribute=lambda w: gen.coefficients(w)[:, a:b],
                                   identity=lambda w: ident(gen.synthesis(w)))


@pytest.fixture(scope="module")
def oracle_basis():
    torch.manual_seed(0)
    gen = freeze(toy.ToyGenerator())
    mask = layer_mask("3..7", gen.num_ws)
    cols = coefficient_columns(gen.face_model.coeff_groups, ORACLE_GROUPS)
    w0 = gen.sample_wplus(8, seed=1, truncation_psi=0.7)
    acc = GramAccumulator(list(ORACLE_GROUPS), int(mask.sum()) * gen.w_dim)
    _, jac = wplus_jacobian(lambda w: gen.coefficients(w)[:, sum(cols.values(), [])], w0, mask)
    acc.update({"pose": jac[:, :6], "exp": jac[:, 6:]})
    return gen, solve_basis(acc.mean(), {"pose": 6, "exp": 6}, mask, gen.w_dim)


def test_basis_toy_oracle_readout_captures_true_subspaces(oracle_basis):
    gen, basis = oracle_basis
    assert _energy(basis.group_vectors("pose"), gen.true_subspace("pose")) >= 0.95
    assert _energy(basis.group_vectors("exp"), gen.true_subspace("exp")) >= 0.95
    assert basis.V.reshape(gen.num_ws, gen.w_dim, -1)[[0, 1, 2, 8, 9]].abs().max() == 0


@pytest.fixture(scope="module")
def trained_basis():
    """The config's basis problem from the trained toy networks, over 16 samples (psi 0.7)."""
    from ipsb.backbone.toy.networks import ToyIdentity, ToyRegressor

    gen = freeze(toy.ToyGenerator())
    reg, ident = freeze(ToyRegressor()), freeze(ToyIdentity())
    mask = layer_mask(CONFIG["layers"], gen.num_ws)
    probe = AttributeProbe(gen, reg, coefficient_columns(gen.face_model.coeff_groups, CONFIG["groups"]), ident, mask)
    acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim)
    for chunk in gen.sample_wplus(16, seed=1, truncation_psi=CONFIG["truncation_psi"]).split(4):
        acc.update(probe(chunk))
    basis = solve_basis(acc.mean(), CONFIG["k"], mask, gen.w_dim, delta=CONFIG["delta"],
                        relative_delta=CONFIG["relative_delta"])
    return gen, ident, basis


def test_basis_toy_trained_networks_pose_subspace(trained_basis):
    gen, _, basis = trained_basis
    assert CONFIG["use_identity"] and CONFIG["groups"]["pose"] == ["angle", "trans"]
    assert _energy(basis.group_vectors("pose"), gen.true_subspace("pose")) >= 0.95


def test_basis_toy_trained_networks_expression_step_keeps_identity(trained_basis):
    gen, ident, basis = trained_basis
    d_exp, d_id = _expression_step(gen, ident, basis, gen.sample_wplus(8, seed=2, truncation_psi=0.7))
    assert d_exp > 0.05
    assert d_exp >= 10 * d_id, (d_exp, d_id)


@pytest.mark.slow
def test_basis_toy_config_meets_the_acceptance(tmp_path):
    """``ipsb fit --config lightning_configs/toy/basis.yaml`` as shipped (64 samples)."""
    from ipsb.backbone.toy.networks import ToyIdentity
    from ipsb.cli import main
    from test_basis_configs import checkpoints_under

    out = tmp_path / "basis.pt"
    main(["fit", "--config", str(CONFIG_PATH), "--model.init_args.output_path", str(out),
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.callbacks", checkpoints_under(tmp_path)])
    basis = Basis.load(out)
    gen, ident = freeze(toy.ToyGenerator()), freeze(ToyIdentity())
    assert basis.config["num_samples"] == 64
    assert _energy(basis.group_vectors("pose"), gen.true_subspace("pose")) >= 0.95
    d_exp, d_id = _expression_step(gen, ident, basis, gen.sample_wplus(8, seed=2, truncation_psi=0.7))
    assert d_exp > 0.05 and d_exp >= 10 * d_id, (d_exp, d_id)
