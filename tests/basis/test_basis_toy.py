"""The basis in the toy world recovers what the toy world says is true.

Ground truth: ``ToyGenerator.true_subspace("pose")`` spans the W+ directions that move the toy's
pose (angle + trans) and ``coefficients(wplus)`` gives the true expression. The basis only sees the
toy's trained regressor and identity network, never the ground truth.
"""
from __future__ import annotations

import pytest
import torch

from ipsb.backbone.interfaces import freeze
from ipsb.basis.accumulator import GramAccumulator
from ipsb.basis.probe import AttributeProbe, coefficient_columns
from ipsb.basis.layers import layer_mask
from ipsb.basis.solve import solve_basis

import ipsb.backbone.toy as toy
from ipsb.backbone.toy.networks import ToyIdentity, ToyRegressor

GROUPS = {"pose": ["angle", "trans"], "exp": ["exp"]}
K = {"pose": 6, "exp": 3}


@pytest.fixture(scope="module")
def toy_basis():
    torch.manual_seed(0)
    gen = freeze(toy.ToyGenerator())
    reg, ident = freeze(ToyRegressor()), freeze(ToyIdentity())
    mask = layer_mask("3..7", gen.num_ws)
    probe = AttributeProbe(gen, reg, coefficient_columns(gen.face_model.coeff_groups, GROUPS), ident, mask)
    acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim)
    w0 = gen.sample_wplus(6, seed=1, truncation_psi=0.7)
    acc.update(probe(w0))
    basis = solve_basis(acc.mean(), K, mask, gen.w_dim, delta=1e-2)
    return gen, ident, basis, w0


def test_basis_toy_pose_captures_true_subspace(toy_basis):
    gen, _, basis, _ = toy_basis
    true = gen.true_subspace("pose").double()                         # [320,6] orthonormal
    v = basis.group_vectors("pose").double()
    energy = float((v.T @ true).pow(2).sum() / true.shape[1])
    assert energy >= 0.95, energy
    # the expression directions, by contrast, are not pose directions
    other = float((basis.group_vectors("exp").double().T @ true).pow(2).sum() / K["exp"])
    assert other < 0.5, other


def test_basis_toy_expression_step_keeps_identity(toy_basis):
    gen, ident, basis, w0 = toy_basis
    a, b = gen.face_model.coeff_groups["exp"]
    v = basis.group_vectors("exp")[:, 0].reshape(1, gen.num_ws, gen.w_dim)
    step = 0.3 * float(gen.w_std) * v / v.norm()
    with torch.no_grad():
        w1 = w0 + step
        d_exp = (gen.coefficients(w1)[:, a:b] - gen.coefficients(w0)[:, a:b]).norm(dim=1)
        d_id = (ident(gen.synthesis(w1)) - ident(gen.synthesis(w0))).norm(dim=1)
    ratio = float(d_exp.mean() / d_id.mean())
    assert d_exp.mean() > 0.05                                          # it really moves expression
    assert ratio >= 10, (float(d_exp.mean()), float(d_id.mean()), ratio)
