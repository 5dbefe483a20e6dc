"""CoeffMapper and LayerLambda: shapes, zero-start, the free-offset ablation, torch.func compatibility."""
import pytest
import torch
from torch.func import jacrev, vmap

from ipsb.nets.layer_lambda import LayerLambda
from ipsb.nets.mapper import CoeffMapper

GROUPS = {"id": (0, 4), "exp": (4, 7), "tex": (7, 9), "angle": (9, 12), "gamma": (12, 14), "trans": (14, 16)}
C = 16


def _randomise(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_basis_mapper_starts_at_zero_and_learns_a_signal():
    m = CoeffMapper(GROUPS, C, out_dim=5, hidden_dim=32, depth=2)
    cs, ct = torch.randn(4, C), torch.randn(4, C)
    c = m(cs, ct)
    assert c.shape == (4, 5) and torch.equal(c, torch.zeros(4, 5))
    # input: source id,exp,angle,trans,gamma (4+3+3+2+2) + target exp,angle,trans,gamma (10) + diffs (10)
    assert m.in_dim == 14 + 10 + 10
    c.sum().backward()
    assert m.net[-1].weight.grad.abs().sum() > 0


def test_mapper_features_are_target_minus_source_for_shared_groups():
    m = CoeffMapper(GROUPS, C, out_dim=2)
    cs, ct = torch.randn(3, C), torch.randn(3, C)
    f = m.features(cs, ct)
    torch.testing.assert_close(f[:, :4], cs[:, 0:4])                 # source id first
    torch.testing.assert_close(f[:, -2:], (ct - cs)[:, 12:14])       # last: gamma(target) - gamma(source)


def test_free_mode_moves_only_the_masked_layers():
    mask = torch.tensor([False, True, True, False, True, False])
    m = CoeffMapper(GROUPS, C, mode="free", layer_mask=mask, w_dim=8, hidden_dim=16, depth=1)
    _randomise(m)
    out = m(torch.randn(5, C), torch.randn(5, C))
    assert out.shape == (5, 6, 8)
    assert torch.equal(out[:, ~mask], torch.zeros(5, 3, 8))
    assert (out[:, mask].abs().sum(-1) > 0).all()
    assert m.out_dim == 3 * 8


@pytest.mark.parametrize("kwargs, msg", [
    (dict(out_dim=0), "out_dim"),
    (dict(out_dim=3, mode="nobasis"), "mode"),
    (dict(out_dim=3, source_groups=("shape",)), "known groups"),
    (dict(mode="free"), "layer_mask"),
])
def test_mapper_bad_configuration_is_a_clear_error(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CoeffMapper(GROUPS, C, **kwargs)


def test_mapper_rejects_wrong_coefficient_width():
    m = CoeffMapper(GROUPS, C, out_dim=3)
    with pytest.raises(ValueError, match=r"\[B,16\]"):
        m(torch.randn(2, 15), torch.randn(2, 16))


def test_mapper_is_torch_func_compatible():
    m = CoeffMapper(GROUPS, C, mode="free", layer_mask=torch.tensor([True, False, True]), w_dim=4,
                    hidden_dim=8, depth=2)
    _randomise(m)
    cs, ct = torch.randn(3, C), torch.randn(3, C)
    per_sample = vmap(lambda a, b: m(a[None], b[None])[0])(cs, ct)
    torch.testing.assert_close(per_sample, m(cs, ct), atol=1e-6, rtol=1e-5)
    jac = jacrev(lambda a: m(a, ct[:1]))(cs[:1])
    assert jac.shape == (1, 3, 4, 1, C)


def test_lambda_starts_at_the_stage1_code_and_mixes_linearly():
    lam = LayerLambda(6, pair_features=5, hidden_dim=8)
    ws, wt = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    feats = torch.randn(2, 5)
    assert torch.equal(lam.mix(ws, wt, feats), ws)
    with torch.no_grad():
        lam.raw.copy_(torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 0.25]))
    lam.head = None
    out = lam.mix(ws, wt)
    torch.testing.assert_close(out[:, 1], wt[:, 1])
    torch.testing.assert_close(out[:, 2], 0.5 * (ws[:, 2] + wt[:, 2]))
    torch.testing.assert_close(out[:, 5], 0.25 * ws[:, 5] + 0.75 * wt[:, 5])


def test_lambda_gradient_at_init_and_projection():
    lam = LayerLambda(4)
    ws, wt = torch.zeros(1, 4, 2), torch.ones(1, 4, 2)
    lam.mix(ws, wt).sum().backward()        # d/dlambda of sum(lam*0 + (1-lam)*1) = -2 per layer
    torch.testing.assert_close(lam.raw.grad, torch.full((4,), -2.0))
    with torch.no_grad():
        lam.raw.copy_(torch.tensor([1.5, -0.2, 0.3, 1.0]))
    torch.testing.assert_close(lam(1).flatten(), torch.tensor([1.0, 0.0, 0.3, 1.0]))
    lam.project_()
    torch.testing.assert_close(lam.raw.detach(), torch.tensor([1.0, 0.0, 0.3, 1.0]))


def test_lambda_head_checks_features_and_init_range():
    lam = LayerLambda(3, pair_features=4)
    with pytest.raises(ValueError, match=r"features \[2,4\]"):
        lam(2)
    with pytest.raises(ValueError, match="w_swap and w_target"):
        lam.mix(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        LayerLambda(3, init=1.5)
