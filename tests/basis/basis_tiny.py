"""Tiny seeded stand-ins for the backbone (generator, 3DMM regressor, identity network) for basis tests.

They follow ``ipsb.backbone.interfaces`` so the basis code meets the same calls as with the real
networks; every op is torch.func friendly. Use ``.double()`` for float64 tests.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ipsb.backbone.interfaces import CoeffRegressor, Generator, IdentityEncoder, freeze

#: coefficient layout of the tiny regressor (FaceModel.coeff_groups style)
TINY_COEFF_GROUPS = {"id": (0, 4), "exp": (4, 9), "angle": (9, 12), "gamma": (12, 15), "trans": (15, 17)}


class TinyGenerator(Generator):
    """W+ ``[B,num_ws,w_dim]`` -> image ``[B,3,R,R]`` in (-1,1): each layer modulates a small conv stack."""

    def __init__(self, num_ws: int = 6, w_dim: int = 4, resolution: int = 8, channels: int = 6, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_ws, self.w_dim, self.resolution = num_ws, w_dim, resolution
        self.feature_resolutions = (resolution,)
        self.const = nn.Parameter(torch.randn(1, channels, resolution, resolution, generator=g))
        self.affine = nn.Parameter(torch.randn(num_ws, w_dim, channels, generator=g) / w_dim ** 0.5)
        self.conv = nn.Parameter(torch.randn(num_ws, channels, channels, 3, 3, generator=g) / (3 * channels ** 0.5))
        self.to_rgb = nn.Parameter(torch.randn(3, channels, generator=g) / channels ** 0.5)
        self.map = nn.Parameter(torch.randn(w_dim, w_dim, generator=g) / w_dim ** 0.5)

    def mapping(self, z, truncation_psi=1.0, truncation_latent=None):
        w = torch.tanh(z @ self.map) * 2
        if truncation_psi != 1.0:
            center = self.mean_latent() if truncation_latent is None else truncation_latent
            w = center + truncation_psi * (w - center)
        return w

    def synthesis(self, wplus, noise_mode="const", modulate=None, return_features=False):
        self.check_wplus(wplus)
        x = self.const.expand(wplus.shape[0], -1, -1, -1)
        for i in range(self.num_ws):
            style = 1 + torch.einsum("bd,dc->bc", wplus[:, i], self.affine[i])      # [B,C]
            x = F.conv2d(x * style[:, :, None, None], self.conv[i], padding=1)
            x = torch.tanh(x) + 0.1 * x
        img = torch.tanh(torch.einsum("bchw,rc->brhw", x, self.to_rgb))
        return (img, {self.resolution: x}) if return_features else img

    def mean_latent(self, n=4096):
        return self.mapping(torch.randn(n, self.w_dim, generator=torch.Generator().manual_seed(1),
                                        dtype=self.map.dtype).to(self.map.device)).mean(0, keepdim=True)


class TinyRegressor(CoeffRegressor):
    """image ``[B,3,R,R]`` -> 17 coefficients (layout :data:`TINY_COEFF_GROUPS`)."""

    def __init__(self, resolution: int = 8, hidden: int = 16, seed: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * resolution ** 2, hidden), nn.Tanh(), nn.Linear(hidden, 17))

    def forward(self, image):
        return self.net(image)


class TinyIdentity(IdentityEncoder):
    """image -> unit embedding ``[B,8]``."""

    def __init__(self, resolution: int = 8, seed: int = 2):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * resolution ** 2, 16), nn.Tanh(), nn.Linear(16, 8))

    def forward(self, image):
        return F.normalize(self.net(image), dim=1)


def tiny_world(dtype=torch.float64):
    """Frozen (generator, regressor, identity) in ``dtype``."""
    return tuple(freeze(m.to(dtype)) for m in (TinyGenerator(), TinyRegressor(), TinyIdentity()))


class TinyFaceModelGroups(nn.Module):
    """Stands in for ``FaceModel`` where only ``coeff_groups`` is needed (the basis never renders)."""

    coeff_groups = TINY_COEFF_GROUPS


def tiny_backbone():
    """A FaceBackbone of the tiny stand-ins (renderer unused by the basis: nn.Identity)."""
    from ipsb.backbone.bundle import FaceBackbone

    return FaceBackbone(TinyGenerator(), TinyFaceModelGroups(), nn.Identity(), TinyRegressor(), TinyIdentity())
