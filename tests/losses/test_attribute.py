"""L_geo / L_render through the toy face model and soft renderer."""
import pytest
import torch

from ipsb.backbone.toy import SoftRenderer, ToyFaceModel
from ipsb.losses.attribute import attribute_losses, geometry_loss, mix_coeffs, wanted_coeffs


@pytest.fixture(scope="module")
def world():
    return ToyFaceModel(image_size=32).eval(), SoftRenderer(image_size=32).eval()


def _coeffs(fm, n, seed):
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(n, fm.num_coeffs, generator=g)


def _group(fm, c, name):
    a, b = fm.coeff_groups[name]
    return c[:, a:b]


def test_wanted_face_takes_shape_from_source_and_the_rest_from_target(world):
    fm, _ = world
    cs, ct = _coeffs(fm, 2, 1), _coeffs(fm, 2, 2)
    want = wanted_coeffs(fm, cs, ct)
    torch.testing.assert_close(_group(fm, want, "id"), _group(fm, cs, "id"))
    for g in ("exp", "tex", "angle", "gamma", "trans"):
        torch.testing.assert_close(_group(fm, want, g), _group(fm, ct, g))


def test_perfect_swap_has_zero_loss_and_albedo_is_ignored(world):
    fm, rd = world
    cs, ct = _coeffs(fm, 2, 1), _coeffs(fm, 2, 2)
    perfect = wanted_coeffs(fm, cs, ct)
    other_tex = mix_coeffs(fm, perfect, {"tex": _coeffs(fm, 2, 9)}, ["tex"])   # swap's own albedo differs
    losses = attribute_losses(fm, rd, cs, ct, other_tex)
    assert losses["geo"].item() < 1e-6 and losses["render"].item() < 1e-6


@pytest.mark.parametrize("group, geo_changes", [("exp", True), ("angle", True), ("id", True), ("gamma", False)])
def test_wrong_attributes_are_penalised(world, group, geo_changes):
    fm, rd = world
    cs, ct = _coeffs(fm, 2, 1), _coeffs(fm, 2, 2)
    perfect = wanted_coeffs(fm, cs, ct)
    wrong = mix_coeffs(fm, perfect, {group: _coeffs(fm, 2, 5)}, [group])
    losses = attribute_losses(fm, rd, cs, ct, wrong)
    assert (losses["geo"].item() > 1e-3) == geo_changes
    assert losses["render"].item() > 1e-4


def test_gradient_reaches_the_swap_coefficients(world):
    fm, rd = world
    cs, ct = _coeffs(fm, 2, 1), _coeffs(fm, 2, 2)
    cst = _coeffs(fm, 2, 3).requires_grad_(True)
    losses = attribute_losses(fm, rd, cs, ct, cst)
    (losses["geo"] + losses["render"]).backward()
    assert _group(fm, cst.grad, "exp").abs().sum() > 0 and _group(fm, cst.grad, "angle").abs().sum() > 0


def test_wrong_width_is_a_clear_error(world):
    fm, _ = world
    with pytest.raises(ValueError, match="swap 3DMM coefficients"):
        geometry_loss(fm, torch.zeros(1, fm.num_coeffs), torch.zeros(1, fm.num_coeffs), torch.zeros(1, 5))
