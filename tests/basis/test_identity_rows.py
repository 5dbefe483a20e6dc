"""Estimates of the identity metric (exact / sketch:k / lowrank:q) on the tiny float64 world.

The tiny identity network has an 8-d unit embedding, so ``J_u`` (``[8,N]``, ``N = 4 layers x 4``)
has rank <= 7 (the direction along the embedding is projected out).
"""
from __future__ import annotations

import pytest
import torch

from basis_tiny import TINY_COEFF_GROUPS, tiny_world
from ipsb.basis.identity_rows import IdentityRows, gaussian
from ipsb.basis.jacobian import WplusDerivatives, project_unit_jacobian, wplus_jacobian
from ipsb.basis.layers import layer_mask
from ipsb.basis.probe import DEFAULT_ATTRIBUTE_GROUPS, AttributeProbe, coefficient_columns


@pytest.fixture(scope="module")
def world():
    gen, reg, ident = tiny_world()
    mask = layer_mask("1..4", gen.num_ws)
    z = torch.randn(3, gen.w_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w0 = gen.mapping(z)[:, None].repeat(1, gen.num_ws, 1)
    w0 = w0 + 0.1 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def probe(rows: str) -> AttributeProbe:
        return AttributeProbe(gen, reg, coefficient_columns(TINY_COEFF_GROUPS, DEFAULT_ATTRIBUTE_GROUPS), ident,
                              mask, chunk_size=5, identity_rows=rows)

    emb, jac = wplus_jacobian(lambda w: ident(gen.synthesis(w)), w0, mask)
    return gen, ident, mask, w0, probe, project_unit_jacobian(emb, jac)      # J_u [B,8,N]


def test_identity_rows_parse_and_passes():
    assert IdentityRows.parse("exact").passes(512) == {"reverse": 512, "forward": 0}
    assert IdentityRows.parse("sketch:32").passes(512) == {"reverse": 32, "forward": 0}
    assert IdentityRows.parse(" lowrank:64 ").passes(512) == {"reverse": 64, "forward": 64}
    assert str(IdentityRows.parse("lowrank:64")) == "lowrank:64"
    for bad in ("sketch", "sketch:0", "lowrank:-3", "exact:4", "random:8", "sketch:4.5"):
        with pytest.raises(ValueError, match="identity_rows"):
            IdentityRows.parse(bad)
    with pytest.raises(ValueError, match="only 512"):
        IdentityRows.parse("sketch:512").check(512)


def test_identity_rows_exact_probe_rows_are_the_unit_jacobian(world):
    *_, w0, probe, ju = world
    p = probe("exact")
    rows = p(w0)["id"]
    torch.testing.assert_close(rows, ju, rtol=0, atol=1e-12)
    assert p.last_passes == {"reverse": 11 + 8, "forward": 0}            # pose 3 + exp 5 + light 3, id 8


def test_identity_rows_sketch_is_seeded_gaussian_projection(world):
    *_, w0, probe, ju = world
    p = probe("sketch:3")
    seeds = [11, 12, 13]
    rows = p(w0, seeds)["id"]                                             # [B,3,N]
    s = gaussian(seeds, (8, 3), "cpu", torch.float64)                     # [B,E,k]
    torch.testing.assert_close(rows, s.transpose(1, 2) @ ju / 3 ** 0.5, rtol=0, atol=1e-12)
    # a sample's rows depend on its seed only, not on the batch it came in
    torch.testing.assert_close(p(w0[1:2], [12])["id"][0], rows[1], rtol=0, atol=1e-12)
    assert p.last_passes == {"reverse": 11 + 3, "forward": 0}


def test_identity_rows_sketch_is_unbiased(world):
    *_, w0, probe, ju = world
    exact = ju[0].T @ ju[0]
    draws = 400
    s = gaussian(range(draws), (8, 4), "cpu", torch.float64) / 2.0        # k = 4
    est = torch.einsum("den,dek->dkn", ju[0].expand(draws, -1, -1), s)
    mean = torch.einsum("dkn,dkm->nm", est, est) / draws
    rel = float((mean - exact).norm() / exact.norm())
    assert rel < 0.1, rel                      # ~1/sqrt(draws * k) ~ 0.03 expected
    one = est[0].T @ est[0]
    assert float((one - exact).norm() / exact.norm()) > 0.2   # a single draw is far off


def test_identity_rows_lowrank_is_exact_at_full_rank_and_below_it_otherwise(world):
    *_, w0, probe, ju = world
    exact = ju.transpose(1, 2) @ ju
    p = probe("lowrank:7")                                                # rank of J_u
    rows = p(w0, [1, 2, 3])["id"]
    torch.testing.assert_close(rows.transpose(1, 2) @ rows, exact, rtol=0, atol=1e-10)
    assert p.last_passes == {"reverse": 11 + 7, "forward": 7}
    low = probe("lowrank:2")(w0, [1, 2, 3])["id"]
    gap = exact - low.transpose(1, 2) @ low                               # J^T (I - QQ^T) J: PSD, not 0
    evals = torch.linalg.eigvalsh(gap)
    assert evals.min() > -1e-10 and evals.max() > 1e-3 * torch.linalg.eigvalsh(exact).max()


def test_wplus_derivatives_rows_and_columns_agree(world):
    gen, ident, mask, w0, *_ = world
    d = WplusDerivatives(lambda w: ident(gen.synthesis(w)), w0, mask)
    t = torch.randn(4, 3, d.dim, dtype=torch.float64)
    c = torch.randn(5, 3, 8, dtype=torch.float64)
    cols = d.columns(t, chunk_size=2)                                     # [B,8,4]  J t
    rows = d.rows(c, chunk_size=2)                                        # [B,5,N]  c^T J
    lhs = torch.einsum("rbe,beq->brq", c, cols)                           # c^T (J t)
    rhs = torch.einsum("brn,qbn->brq", rows, t)                           # (c^T J) t
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="tangents"):
        d.columns(torch.zeros(2, 3, d.dim + 1, dtype=torch.float64))
