"""MSFT: Masked Spatial Feature Transform, the trainable part of stage 3 (blending).

Inside the generator's synthesis network, at each chosen resolution ``r`` the feature map
``f_r [B,C_r,r,r]`` of the swap code ``w'`` is modulated by scale and shift maps predicted from the
*target* image and the target's face mask::

    x     = cat(target image [B,3,H,W] in [-1,1], face mask m [B,1,H,W] in [0,1])
    t_r   = resize(trunk(x), r)                        (shared conv trunk, bilinear to r)
    x_r   = resize(x, r)                               (area / bilinear)
    gamma_r, beta_r = head_r(t_r) + skip_r(x_r)        (3x3 conv head + 1x1 linear skip, 2 C_r channels)
    m_r   = resize(m, r)
    f_r'  = f_r + (1 - m_r) * (gamma_r * f_r + beta_r)

So inside the face (``m_r = 1``) the swap's features pass unchanged, and outside (``m_r = 0``) they
become ``(1 + gamma_r) f_r + beta_r``: with ``gamma_r = -1`` the features are replaced by
``beta_r``, a function of the target image, so the background, hair and frame follow the target.
Every head and skip starts at zero (``gamma = beta = 0``), so an untrained MSFT is the identity and
stage 3 starts exactly at the stage-2 result. The 1x1 skip gives a linear path from target pixels to
features (which, for generators whose features are close to image space, is most of the answer).

:meth:`MSFT.modulator` returns the ``modulate(resolution, features)`` hook of
:meth:`ipsb.backbone.interfaces.Generator.synthesis`. No in-place ops and no data-dependent Python
control flow (the hook works under ``torch.func``).

Hand-written (no library offers a feature-map SFT hook for an arbitrary generator); its conv blocks
are plain torch layers.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.interfaces import FeatureModulator


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    if t.shape[-1] > size:
        return F.adaptive_avg_pool2d(t, size)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


def generator_channels(generator, resolutions: Sequence[int]) -> dict[int, int]:
    """Feature channels per resolution: ``generator.channels`` if it has that table, else probed
    with one synthesis of the mean latent (``return_features=True``)."""
    res = [int(r) for r in resolutions]
    bad = [r for r in res if r not in tuple(generator.feature_resolutions)]
    if bad:
        raise ValueError(f"MSFT resolutions {bad} are not feature resolutions of this generator "
                         f"{tuple(generator.feature_resolutions)}")
    table = getattr(generator, "channels", None)
    if isinstance(table, Mapping) and all(r in table for r in res):
        return {r: int(table[r]) for r in res}
    with torch.no_grad():
        w = generator.mean_latent()[:, None].expand(1, generator.num_ws, generator.w_dim)
        _, feats = generator.synthesis(w.contiguous(), noise_mode="const", return_features=True)
    return {r: int(feats[r].shape[1]) for r in res}


class MSFT(nn.Module):
    """Masked spatial feature transform (formula in the module docstring).

    Args:
        channels: ``{resolution: feature channels C_r}`` of the generator at the modulated resolutions
            (:func:`generator_channels`).
        hidden: width of the shared trunk.
        trunk_depth: number of 3x3 conv blocks of the trunk (at ``input_size``).
        input_size: side the target image and mask are resized to before the trunk.
    """

    def __init__(self, channels: Mapping[int, int], hidden: int = 32, trunk_depth: int = 2,
                 input_size: int = 64):
        super().__init__()
        if not channels:
            raise ValueError("MSFT needs at least one resolution to modulate")
        self.channels = {int(r): int(c) for r, c in sorted(channels.items())}
        self.resolutions = tuple(self.channels)
        self.input_size = int(input_size)
        layers, cin = [], 4
        for _ in range(trunk_depth):
            layers += [nn.Conv2d(cin, hidden, 3, 1, 1), nn.LeakyReLU(0.2)]
            cin = hidden
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict()
        self.skips = nn.ModuleDict()
        for r, c in self.channels.items():
            head = nn.Conv2d(cin, 2 * c, 3, 1, 1)
            skip = nn.Conv2d(4, 2 * c, 1)
            for conv in (head, skip):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
            self.heads[str(r)], self.skips[str(r)] = head, skip

    @classmethod
    def for_generator(cls, generator, resolutions: Sequence[int], **kwargs) -> "MSFT":
        """An MSFT sized for ``generator``'s feature maps at ``resolutions``."""
        return cls(generator_channels(generator, resolutions), **kwargs)

    def check_inputs(self, target: torch.Tensor, mask: torch.Tensor) -> None:
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"MSFT target must be an image [B,3,H,W] in [-1,1], got {list(target.shape)}")
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != target.shape[0] \
                or mask.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"MSFT mask must be [B,1,H,W] = [{target.shape[0]},1,{target.shape[2]},"
                             f"{target.shape[3]}] in [0,1], got {list(mask.shape)}")

    def maps(self, target: torch.Tensor, mask: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """-> ``{r: (gamma_r [B,C_r,r,r], beta_r [B,C_r,r,r], m_r [B,1,r,r])}``."""
        self.check_inputs(target, mask)
        x = torch.cat([target, mask.to(target.dtype)], 1)
        trunk = self.trunk(_resize(x, self.input_size))
        out = {}
        for r, c in self.channels.items():
            gb = self.heads[str(r)](_resize(trunk, r)) + self.skips[str(r)](_resize(x, r))
            out[r] = (gb[:, :c], gb[:, c:], _resize(mask.to(target.dtype), r))
        return out

    @staticmethod
    def transform(features: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``f + (1 - m) * (gamma * f + beta)``; all ``[B,*,r,r]``."""
        return features + (1 - mask) * (gamma * features + beta)

    def modulator(self, target: torch.Tensor, mask: torch.Tensor) -> FeatureModulator:
        """The ``modulate(resolution, features)`` hook for ``Generator.synthesis``.

        ``target`` ``[B,3,H,W]`` in [-1,1] (the target image), ``mask`` ``[B,1,H,W]`` in [0,1] (1 on the
        face that must stay the swap's). Resolutions not in :attr:`resolutions` pass unchanged.
        """
        maps = self.maps(target, mask)

        def modulate(resolution: int, features: torch.Tensor) -> torch.Tensor:
            if resolution not in maps:
                return features
            gamma, beta, m = maps[resolution]
            if features.shape[1] != gamma.shape[1]:
                raise ValueError(f"MSFT expects {gamma.shape[1]} feature channels at resolution {resolution}, "
                                 f"the generator gave {features.shape[1]}")
            return self.transform(features, gamma.to(features.dtype), beta.to(features.dtype), m.to(features.dtype))

        return modulate

    def forward(self, generator, wplus: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                noise_mode: str = "const") -> torch.Tensor:
        """Blend: ``G(wplus)`` with MSFT modulation -> image ``[B,3,R,R]`` in about [-1,1]."""
        return generator.synthesis(wplus, noise_mode=noise_mode, modulate=self.modulator(target, mask))
