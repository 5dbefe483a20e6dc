"""identity_loss / identity_cosine with a tiny deterministic stand-in encoder."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ipsb.losses.identity import identity_cosine, identity_loss


class PoolEncoder(nn.Module):
    """Stand-in identity net: 4x4 average pool, flatten, L2 normalise -> [B,48]."""

    def forward(self, x):
        return F.normalize(F.adaptive_avg_pool2d(x, 4).flatten(1), dim=1)


def test_identity_loss_is_one_minus_cosine_and_zero_for_the_same_face():
    enc = PoolEncoder()
    a, b = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    assert identity_loss(enc, a, enc(a)).abs() < 1e-6
    want = (1 - (enc(a) * enc(b)).sum(1)).mean()
    torch.testing.assert_close(identity_loss(enc, a, enc(b)), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(identity_loss(enc, a, -enc(a)), torch.tensor(2.0), atol=1e-6, rtol=0)


def test_identity_loss_gradient_reaches_the_image_only():
    enc = PoolEncoder()
    img = torch.randn(2, 3, 16, 16, requires_grad=True)
    ref = enc(torch.randn(2, 3, 16, 16)).requires_grad_(True)
    identity_loss(enc, img, ref).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert ref.grad is None


def test_identity_cosine_checks_shapes():
    with pytest.raises(ValueError, match=r"\[B,D\]"):
        identity_cosine(torch.randn(2, 4), torch.randn(2, 5))
