"""StyleGAN2Generator: W+ interface, noise modes, feature hooks, truncation and torch.func on a tiny model."""
from __future__ import annotations

import pytest
import torch

from ipsb.backbone.interfaces import Generator, freeze
from ipsb.backbone.stylegan2 import StyleGAN2Generator, channel_table


def tiny(resolution: int = 32, **kw) -> StyleGAN2Generator:
    torch.manual_seed(0)
    return freeze(StyleGAN2Generator(resolution, w_dim=32, n_mlp=2, channel_base=512, channel_max=16, **kw))


def test_tiny_generator_shapes_and_attributes():
    g = tiny()
    assert isinstance(g, Generator)
    assert (g.num_ws, g.w_dim, g.resolution) == (8, 32, 32)
    assert g.feature_resolutions == (4, 8, 16, 32)
    w = torch.randn(2, g.num_ws, g.w_dim)
    img, feats = g.synthesis(w, return_features=True)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert {r: tuple(f.shape) for r, f in feats.items()} == {r: (2, 16, r, r) for r in (4, 8, 16, 32)}


def test_channel_tables():
    assert channel_table(1024, 2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                                      512: 64, 1024: 32}
    assert channel_table(1024, channel_base=32768) == channel_table(1024, 2)
    assert channel_table(256, channel_base=16384) == channel_table(256, 1)
    assert channel_table(32, channel_base=512, channel_max=16) == {4: 16, 8: 16, 16: 16, 32: 16}


@pytest.mark.parametrize("shape", [(2, 7, 32), (2, 8, 16), (8, 32)])
def test_wrong_wplus_shape_is_a_clear_error(shape):
    g = tiny()
    with pytest.raises(ValueError, match=r"\[B,8,32\]"):
        g.synthesis(torch.randn(*shape))


def test_bad_noise_mode_and_bad_z():
    g = tiny()
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(torch.randn(1, 8, 32), noise_mode="fresh")
    with pytest.raises(ValueError, match=r"z of shape \[B,32\]"):
        g.mapping(torch.randn(1, 31))


def test_noise_modes():
    g = tiny()
    for i in range(g.num_layers):  # make noise matter
        getattr(g.noises, f"noise_{i}").normal_()
    for m in list(g.convs) + [g.conv1]:
        m.noise.weight.data.fill_(0.5)
    w = torch.randn(1, g.num_ws, g.w_dim)
    const1, const2 = g.synthesis(w, "const"), g.synthesis(w, "const")
    assert torch.equal(const1, const2)
    r1, r2 = g.synthesis(w, "random"), g.synthesis(w, "random")
    assert (r1 - r2).abs().max() > 1e-3
    none = g.synthesis(w, "none")
    for m in list(g.convs) + [g.conv1]:
        m.noise.weight.data.zero_()
    assert torch.allclose(none, g.synthesis(w, "const"), atol=1e-6)


def test_modulate_hook_sees_every_resolution_and_changes_the_image():
    g = tiny()
    w = torch.randn(2, g.num_ws, g.w_dim)
    seen = []

    def identity(res, feat):
        seen.append((res, tuple(feat.shape)))
        return feat

    base = g.synthesis(w)
    assert torch.equal(g.synthesis(w, modulate=identity), base)
    assert seen == [(r, (2, 16, r, r)) for r in (4, 8, 16, 32)]

    def zero_16(res, feat):
        return feat * 0 if res == 16 else feat

    img, feats = g.synthesis(w, modulate=zero_16, return_features=True)
    assert feats[16].abs().max() == 0 and (img - base).abs().max() > 1e-3


def test_mapping_truncation_and_mean_latent():
    g = tiny()
    z = torch.randn(3, 32)
    w = g.mapping(z)
    assert w.shape == (3, 32)
    anchor = torch.randn(1, 32)
    assert torch.allclose(g.mapping(z, 0.5, anchor), anchor + 0.5 * (w - anchor), atol=1e-6)
    assert torch.allclose(g.mapping(z, 0.0, anchor), anchor.expand(3, -1))
    # no stored average: computed from samples, shape [1,w_dim]
    m = g.mean_latent(512)
    assert m.shape == (1, 32) and torch.isfinite(m).all()
    assert torch.equal(m, g.mean_latent(512))  # seeded: truncation without an anchor is repeatable
    assert not torch.equal(m, g.mean_latent(512, seed=1))
    assert torch.equal(g.mapping(z, 0.5), g.mapping(z, 0.5, g.mean_latent()))
    # a stored average is returned as is and used for truncation by default
    avg = torch.randn(32)
    g.set_latent_avg(avg)
    assert torch.equal(g.mean_latent(), avg[None])
    assert torch.allclose(g.mapping(z, 0.7), avg + 0.7 * (w - avg), atol=1e-6)
    with pytest.raises(ValueError, match="latent_avg"):
        g.set_latent_avg(torch.randn(31))


def test_forward_equals_mapping_then_broadcast_synthesis():
    g = tiny()
    z = torch.randn(2, 32)
    w = g.mapping(z)
    assert torch.equal(g(z), g.synthesis(w[:, None].expand(-1, g.num_ws, -1)))


def test_torch_func_jacrev_and_vmap_vjp_over_wplus():
    g = tiny(resolution=16).double()  # float64 so the finite-difference check is tight
    w0 = torch.randn(g.num_ws, g.w_dim, dtype=torch.float64)
    proj = torch.randn(5, 3 * 16 * 16, dtype=torch.float64) / 30

    def attr(wplus):  # [num_ws, w_dim] -> [5], a stand-in for an attribute regressor
        return proj @ g.synthesis(wplus[None]).reshape(-1)

    jac = torch.func.jacrev(attr)(w0)
    assert jac.shape == (5, g.num_ws, g.w_dim)
    # compare with plain autograd rows and a finite difference
    w_req = w0.clone().requires_grad_(True)
    row = torch.autograd.grad(attr(w_req)[2], w_req)[0]
    assert torch.allclose(jac[2], row, atol=1e-10, rtol=1e-8)
    d = torch.randn_like(w0) * 1e-5
    fd = (attr(w0 + d) - attr(w0 - d)) / 2
    lin = (jac * d).sum(dim=(1, 2))
    assert torch.allclose(fd, lin, rtol=1e-5, atol=1e-12)
    # vmap over a batch of W+ codes through a vjp
    ws = torch.randn(3, g.num_ws, g.w_dim, dtype=torch.float64)

    def grad_of_first(wplus):
        _, vjp = torch.func.vjp(attr, wplus)
        return vjp(torch.eye(5, dtype=torch.float64)[0])[0]

    batched = torch.func.vmap(grad_of_first)(ws)
    assert torch.allclose(batched[1], torch.func.jacrev(attr)(ws[1])[0], atol=1e-10, rtol=1e-8)


def test_device_and_dtype_follow_the_module():
    g = tiny().double()
    img = g.synthesis(torch.randn(1, g.num_ws, g.w_dim, dtype=torch.float64))
    assert img.dtype == torch.float64


def test_resolution_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(48, w_dim=32, n_mlp=1, channel_base=512, channel_max=16)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """Inductor compile of the tiny generator (about 4 min on a loaded 2-core CPU, hence slow)."""
    g = tiny()
    w = torch.randn(2, g.num_ws, g.w_dim)
    with torch.no_grad():
        eager = g.synthesis(w)
        compiled = torch.compile(g.synthesis)(w)
    assert (compiled - eager).abs().max() <= 1e-5 * eager.abs().max()
