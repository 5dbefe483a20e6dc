"""perceptual_distance with LPIPS (random backbone weights, pnet_rand=True), masked and unmasked."""
import lpips
import pytest
import torch

from ipsb.losses.perceptual import perceptual_distance, perceptual_loss


@pytest.fixture(scope="module")
def lp():
    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval().requires_grad_(False)


def test_same_images_have_zero_distance_and_different_ones_do_not(lp):
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert perceptual_distance(lp, a, a).abs().max() < 1e-6
    d = perceptual_distance(lp, a, b)
    assert d.shape == (2,) and (d > 1e-4).all()


def test_mask_hides_differences_outside_it(lp):
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    b = a.clone()
    b[..., :16] = -b[..., :16]                      # change the left half only
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1                              # compare the right half
    assert perceptual_distance(lp, a, b, mask).abs().max() < 1e-6
    assert perceptual_distance(lp, a, b, 1 - mask).item() > 1e-4


def test_gradient_and_shape_errors(lp):
    a = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    perceptual_loss(lp, a, torch.zeros(1, 3, 32, 32)).backward()
    assert a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask must be"):
        perceptual_distance(lp, a, a, torch.ones(1, 3, 32, 32))
    with pytest.raises(ValueError, match="one shape"):
        perceptual_distance(lp, a, torch.zeros(1, 3, 16, 16))


def test_backbone_perceptual_loads_the_packaged_heads_itself(monkeypatch, tmp_path):
    """ipsb's Perceptual reads lpips' bundled linear heads through ipsb's loader; same result as lpips' own."""
    from ipsb.backbone import perceptual as P
    from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError

    torch.manual_seed(0)
    ours = P.Perceptual(net="alex", pnet_rand=True)
    torch.manual_seed(0)
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()     # lpips loads its heads itself
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.lpips.state_dict()[k], v), k
    assert ours.heads_path.name == "alex.pth"
    fake = tmp_path / "lpips" / "__init__.py"                  # an lpips install without its weights
    monkeypatch.setattr(lpips, "__file__", str(fake))
    with pytest.raises(MissingCheckpointError, match=r"weights/v0\.1/alex\.pth"):
        P.Perceptual(net="alex", pnet_rand=True)
    (tmp_path / "lpips" / "weights" / "v0.1").mkdir(parents=True)
    (tmp_path / "lpips" / "weights" / "v0.1" / "alex.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="alex.pth"):
        P.Perceptual(net="alex", pnet_rand=True)
