"""MSFT (stage-3 feature transform), the face-region mask and the background loss, on tiny stand-ins.

The stand-in generator follows ``Generator.synthesis(wplus, noise_mode, modulate, return_features)``:
feature maps at 8 and 16 px with different channel counts, each passed through ``modulate``.
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.interfaces import Generator
from ipsb.losses.background import background_l1, background_loss
from ipsb.nets.face_mask import FaceRegionMask
from ipsb.nets.msft import MSFT, generator_channels


class TinyGenerator(Generator):
    """W+ [B,4,8] -> image [B,3,16,16]; features {8: [B,6,8,8], 16: [B,5,16,16]}."""

    def __init__(self, with_table: bool = False):
        super().__init__()
        self.num_ws, self.w_dim, self.resolution, self.feature_resolutions = 4, 8, 16, (8, 16)
        g = torch.Generator().manual_seed(0)
        self.const = nn.Parameter(torch.randn(1, 6, 8, 8, generator=g))
        self.style8 = nn.Linear(8, 6)
        self.conv = nn.Conv2d(6, 5, 3, 1, 1)
        self.style16 = nn.Linear(8, 5)
        self.to_rgb = nn.Conv2d(5, 3, 1)
        if with_table:
            self.channels = {8: 6, 16: 5}

    def mapping(self, z, truncation_psi=1.0, truncation_latent=None):
        return z

    def mean_latent(self, n=4096):
        return torch.zeros(1, self.w_dim)

    def synthesis(self, wplus, noise_mode="const", modulate=None, return_features=False):
        self.check_wplus(wplus)
        x = self.const * (1 + self.style8(wplus[:, 0]))[:, :, None, None]
        feats = {}
        if modulate is not None:
            x = modulate(8, x)
        feats[8] = x
        x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")) * (1 + self.style16(wplus[:, 1]))[:, :, None, None]
        if modulate is not None:
            x = modulate(16, x)
        feats[16] = x
        img = torch.tanh(self.to_rgb(x))
        return (img, feats) if return_features else img


def _inputs(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(b, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    return torch.randn(b, 4, 8, generator=g), target, mask


def _randomize(msft):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in msft.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_msft_blend_starts_as_identity_and_channels_are_found():
    gen = TinyGenerator()
    assert generator_channels(gen, (8, 16)) == {8: 6, 16: 5}                    # probed
    assert generator_channels(TinyGenerator(with_table=True), (16,)) == {16: 5}  # from the table
    msft = MSFT.for_generator(gen, (8, 16), hidden=8, input_size=16)
    w, target, mask = _inputs()
    assert torch.equal(msft(gen, w, target, mask), gen.synthesis(w))


def test_msft_blend_formula_inside_and_outside_the_mask():
    gen = TinyGenerator()
    msft = MSFT.for_generator(gen, (16,), hidden=8, input_size=16)
    _randomize(msft)
    w, target, mask = _inputs()
    _, plain = gen.synthesis(w, return_features=True)
    _, mod = gen.synthesis(w, modulate=msft.modulator(target, mask), return_features=True)
    assert torch.equal(mod[8], plain[8])                         # resolution 8 not modulated
    gamma, beta, m = msft.maps(target, mask)[16]
    expected = plain[16] + (1 - m) * (gamma * plain[16] + beta)
    torch.testing.assert_close(mod[16], expected, rtol=0, atol=1e-6)
    inside = mask.expand_as(plain[16]) > 0
    assert torch.equal(mod[16][inside], plain[16][inside])      # the face stays the swap's
    assert (mod[16][~inside] - plain[16][~inside]).abs().max() > 1e-2


def test_msft_blend_can_replace_the_outside_by_the_target():
    """gamma = -1 and beta = target features outside: the result follows the target exactly there."""
    gen = TinyGenerator()
    msft = MSFT({16: 5}, hidden=4, input_size=16)
    w, target, mask = _inputs()
    wanted = torch.randn(2, 5, 16, 16)
    f = gen.synthesis(w, modulate=lambda r, x: x, return_features=True)[1][16]
    out = MSFT.transform(f, -torch.ones_like(f), wanted, mask)
    torch.testing.assert_close(out[(mask == 0).expand_as(out)], wanted[(mask == 0).expand_as(out)],
                               rtol=0, atol=1e-6)
    assert torch.equal(out[(mask == 1).expand_as(out)], f[(mask == 1).expand_as(out)])


def test_msft_blend_works_under_torch_func():
    gen = TinyGenerator()
    msft = MSFT.for_generator(gen, (8, 16), hidden=8, input_size=16)
    _randomize(msft)
    w, target, mask = _inputs(b=1)
    hook = msft.modulator(target, mask)
    f = lambda wp: gen.synthesis(wp[None], modulate=hook)[0].sum()
    jac = torch.func.jacrev(f)(w[0])
    assert jac.shape == (4, 8) and torch.isfinite(jac).all()
    vm = torch.func.vmap(lambda wp: gen.synthesis(wp[None], modulate=hook))(w[:, None].expand(3, 1, 4, 8)[:, 0])
    assert vm.shape == (3, 1, 3, 16, 16)


def test_msft_blend_rejects_bad_inputs():
    gen = TinyGenerator()
    with pytest.raises(ValueError, match=r"resolutions \[32\]"):
        MSFT.for_generator(gen, (32,))
    with pytest.raises(ValueError, match="at least one"):
        MSFT({})
    msft = MSFT.for_generator(gen, (16,), hidden=4, input_size=16)
    w, target, mask = _inputs()
    with pytest.raises(ValueError, match="mask must be"):
        msft.modulator(target, mask[:, :, :8])
    with pytest.raises(ValueError, match="target must be"):
        msft.modulator(target[:, :1], mask)
    wrong = MSFT({16: 7}, hidden=4, input_size=16)
    with pytest.raises(ValueError, match="expects 7 feature channels"):
        wrong(gen, w, target, mask)


def test_blend_background_l1_is_the_masked_mean_abs_error():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[:, :, :2] = 0.5          # differs on the top half
    b[:, :, 2:] = 2.0          # and much more on the bottom half
    outside = torch.zeros(2, 1, 4, 4)
    outside[:, :, :2] = 1      # only the top half counts
    torch.testing.assert_close(background_l1(a, b, outside), torch.full((2,), 0.5))
    assert background_loss(a, a, outside) == 0
    assert background_l1(a, b, torch.zeros(2, 1, 4, 4)).abs().max() == 0   # empty region: 0, not NaN
    with pytest.raises(ValueError, match="mask must be"):
        background_l1(a, b, outside[:, :, :2])
    with pytest.raises(ValueError, match="two"):
        background_l1(a, b[:, :, :2], outside)


def test_blend_face_mask_dilates_feathers_and_picks_its_source():
    square = torch.zeros(1, 1, 64, 64)
    square[:, :, 24:40, 24:40] = 1.0
    calls = []

    def masker(img):
        calls.append("masker")
        return square.expand(img.shape[0], 1, 64, 64)

    render = SimpleNamespace(mask=square * 0.9)
    def face_model(coeffs):
        return SimpleNamespace(vertices=None, colors=None)

    face_model.faces = None
    bb = SimpleNamespace(masker=masker, regressor=lambda img: torch.zeros(img.shape[0], 5),
                         face_model=face_model, renderer=lambda v, f, c: render)
    image = torch.zeros(1, 3, 64, 64)
    hard = FaceRegionMask("parser", dilate=0, feather=0, scale_with_size=False)(bb, image)
    assert torch.equal(hard, square)
    grown = FaceRegionMask("parser", dilate=4, feather=0, scale_with_size=False)(bb, image)
    assert grown.sum() == 24 * 24 and grown[0, 0, 20, 20] == 1 and grown[0, 0, 19, 19] == 0
    soft = FaceRegionMask("parser", dilate=4, feather=2, scale_with_size=False)(bb, image)
    assert 0 < soft[0, 0, 19, 32] < 1 and soft[0, 0, 32, 32] == pytest.approx(1.0) and soft[0, 0, 0, 0] < 1e-6
    scaled = FaceRegionMask("parser", dilate=16, feather=0)(bb, image)   # 16 px at 256 -> 4 px at 64
    assert torch.equal(scaled, grown)
    n = len(calls)
    rendered = FaceRegionMask("render", dilate=0, feather=0, scale_with_size=False)(bb, image)
    assert len(calls) == n and torch.equal(rendered, square)               # thresholded 0.9 -> 1
    with pytest.raises(ValueError, match="source must be one of"):
        FaceRegionMask("bisenet")
    with pytest.raises(ValueError, match="needs a backbone with a masker"):
        FaceRegionMask("parser")(SimpleNamespace(masker=None), image)
