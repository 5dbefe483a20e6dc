"""The basis math on a tiny float64 world: 2 J^T J is the Hessian, the generalized eigenpairs are exact,
the union is orthonormal."""
from __future__ import annotations

import pytest
import torch

from basis_tiny import TINY_COEFF_GROUPS, tiny_world
from ipsb.basis.accumulator import GramAccumulator
from ipsb.basis.eigensolver import generalized_eigh, orthonormal_union, regularised_metric, relative_residual
from ipsb.basis.jacobian import wplus_jacobian
from ipsb.basis.layers import layer_mask, parse_layers
from ipsb.basis.probe import AttributeProbe, DEFAULT_ATTRIBUTE_GROUPS, coefficient_columns
from ipsb.basis.solve import solve_basis


def masked_distance(distance, w0: torch.Tensor, mask: torch.Tensor):
    """``distance(wplus [1,num_ws,w_dim]) -> scalar`` as a function of the flattened perturbation
    ``dw [L*w_dim]`` of the masked layers (``w = w0 + dw`` there, ``w0`` elsewhere): what autograd's
    Hessian is taken of."""
    idx = torch.nonzero(mask, as_tuple=False).flatten()
    shape = (1, int(mask.sum()), w0.shape[2])

    def fn(dw: torch.Tensor) -> torch.Tensor:
        return distance(w0.detach() + torch.zeros_like(w0).index_add(1, idx, dw.reshape(shape)))

    return fn


def _w0(gen, b=3, seed=0):
    z = torch.randn(b, gen.w_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w = gen.mapping(z)[:, None].repeat(1, gen.num_ws, 1)
    return w + 0.1 * torch.randn(w.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)


def test_parse_layers_basis():
    assert parse_layers("3..9", 18) == list(range(3, 10))
    assert parse_layers([5, 1, 1], 6) == [1, 5]
    assert layer_mask(None, 4).all()
    for bad in ("3-9", "9..3", [18], []):
        with pytest.raises(ValueError):
            parse_layers(bad, 18)


def test_basis_gauss_newton_equals_autograd_hessian():
    gen, reg, _ = tiny_world()
    mask = layer_mask("1..4", gen.num_ws)
    w0 = _w0(gen, b=1)
    cols = torch.tensor(list(range(*TINY_COEFF_GROUPS["exp"])))

    def p(w):
        return reg(gen.synthesis(w))[:, cols]

    p0 = p(w0)
    fn = masked_distance(lambda w: ((p(w) - p0) ** 2).sum(), w0, mask)
    n = int(mask.sum()) * gen.w_dim
    hess = torch.autograd.functional.hessian(fn, torch.zeros(n, dtype=torch.float64), vectorize=True)
    _, jac = wplus_jacobian(p, w0, mask, chunk_size=2)
    gn = 2 * jac[0].T @ jac[0]
    rel = (gn - hess).norm() / hess.norm()
    assert rel <= 1e-6, rel
    assert hess.norm() > 1e-3                   # not trivially zero
    # loop path gives the same Jacobian as the vmapped one
    _, jac_loop = wplus_jacobian(p, w0, mask, vectorize=False)
    torch.testing.assert_close(jac_loop, jac, rtol=1e-12, atol=1e-14)


def test_basis_identity_jacobian_is_hessian_of_one_minus_cos():
    gen, _, ident = tiny_world()
    mask = layer_mask("0..2", gen.num_ws)
    w0 = _w0(gen, b=1, seed=3)

    def raw(w):  # deliberately unnormalised: the projection must handle the norm
        return 3.0 * ident(gen.synthesis(w))

    e0 = raw(w0)
    fn = masked_distance(lambda w: 1 - torch.nn.functional.cosine_similarity(raw(w), e0).sum(), w0, mask)
    n = int(mask.sum()) * gen.w_dim
    hess = torch.autograd.functional.hessian(fn, torch.zeros(n, dtype=torch.float64), vectorize=True)
    from ipsb.basis.jacobian import project_unit_jacobian
    out, jac = wplus_jacobian(raw, w0, mask)
    ju = project_unit_jacobian(out, jac)[0]
    rel = (ju.T @ ju - hess).norm() / hess.norm()
    assert rel <= 1e-6, rel


def test_basis_probe_and_accumulator_match_per_sample_sum():
    gen, reg, ident = tiny_world()
    mask = layer_mask("1..4", gen.num_ws)
    probe = AttributeProbe(gen, reg, coefficient_columns(TINY_COEFF_GROUPS, DEFAULT_ATTRIBUTE_GROUPS), ident,
                           mask, chunk_size=3)
    w0 = _w0(gen, b=4)
    acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim)
    acc.update(probe(w0[:2]))
    acc.update(probe(w0[2:]))
    grams = acc.mean()
    for i in range(4):  # per-sample Jacobians, one at a time
        jac_i = probe(w0[i:i + 1])
        for g in probe.groups:
            grams[g] = grams[g] - jac_i[g][0].T @ jac_i[g][0] / 4
    for g in probe.groups:
        assert grams[g].abs().max() < 1e-12, g
    with pytest.raises(ValueError, match="groups"):
        acc.update({"pose": torch.zeros(1, 3, acc.dim)})


def test_basis_generalized_eigenvectors_residual():
    gen, reg, ident = tiny_world()
    mask = layer_mask("1..4", gen.num_ws)
    probe = AttributeProbe(gen, reg, coefficient_columns(TINY_COEFF_GROUPS, DEFAULT_ATTRIBUTE_GROUPS), ident, mask)
    acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim)
    acc.update(probe(_w0(gen, b=5)))
    grams = acc.mean()
    metric = regularised_metric(grams["id"], 1e-3)
    evals, vecs = generalized_eigh(grams["exp"], metric)
    res = relative_residual(grams["exp"], metric, vecs, evals)
    assert res.max() <= 1e-6, res.max()
    assert (evals[:-1] >= evals[1:]).all()
    assert evals[0] > 1e-6
    # not a plain eigenproblem: the identity metric changes the answer
    plain = torch.linalg.eigvalsh(grams["exp"]).flip(0)
    assert not torch.allclose(plain[:3] / plain[0], evals[:3] / evals[0], rtol=1e-3)
    with pytest.raises(ValueError, match="positive definite"):
        generalized_eigh(grams["exp"], -torch.eye(metric.shape[0], dtype=torch.float64))

    basis = solve_basis(grams, {"pose": 2, "exp": 3, "light": 2}, mask, gen.w_dim, delta=1e-3)
    v = basis.V.double()
    assert basis.num_directions == 7
    torch.testing.assert_close(v.T @ v, torch.eye(7, dtype=torch.float64), atol=1e-6, rtol=0)
    rows = v.reshape(gen.num_ws, gen.w_dim, -1)
    assert rows[~mask].abs().max() == 0
    assert basis.groups == {"pose": (0, 2), "exp": (2, 5), "light": (5, 7)}
    assert 0 < basis.explained_energy["exp"] <= 1
    # the pose block spans the top-2 generalized pose eigenvectors
    ep, vp = generalized_eigh(grams["pose"], metric)
    q = rows[mask].reshape(-1, 7)[:, :2].double()
    top = vp[:, :2] / vp[:, :2].norm(dim=0)
    assert ((q.T @ top).norm(dim=0) - 1).abs().max() < 1e-5


def test_basis_orthonormal_union_drops_repeated_directions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 3, generator=g, dtype=torch.float64)
    b = torch.cat([a[:, :1] * 2 + 1e-14, torch.randn(10, 2, generator=g, dtype=torch.float64)], 1)
    q, sizes = orthonormal_union([a, b])
    assert sizes == [3, 2]
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=torch.float64), atol=1e-10, rtol=0)
    # first block spans a
    proj = q[:, :3] @ (q[:, :3].T @ a)
    torch.testing.assert_close(proj, a, atol=1e-10, rtol=0)


def test_basis_without_identity_is_plain_hessian_eigenvectors():
    g = torch.Generator().manual_seed(0)
    j = torch.randn(5, 12, generator=g, dtype=torch.float64)
    h = j.T @ j
    mask = torch.tensor([False, True, True, True])
    basis = solve_basis({"exp": h}, {"exp": 2}, mask, 4)
    evals, vecs = torch.linalg.eigh(h)
    top = vecs[:, -2:]
    v = basis.V.double().reshape(4, 4, 2)[mask].reshape(12, 2)
    assert ((v.T @ top).norm(dim=0) - 1).abs().max() < 1e-6
    torch.testing.assert_close(basis.eigenvalues["exp"], evals.flip(0)[:2])
