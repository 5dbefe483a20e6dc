"""Seeded toy-world samples for training and evaluating the toy networks.

``render_samples(generator, n, seed)`` -> dict with ``wplus [n,10,32]``, ``image [n,3,64,64]`` in
[-1,1], ``coeffs [n,30]`` (ground truth) and ``mask [n,1,64,64]`` in [0,1] (the rendered face
coverage). Half the codes repeat one w over all rows (as ``mapping`` + broadcast does), half draw an
independent w per row (``sample_wplus(mix=True)``), so every coefficient group varies independently.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def render_samples(generator, n: int, seed: int, chunk: int = 64, noise_mode: str = "const",
                   mixed_only: bool = False) -> dict:
    """``n`` seeded toy samples (see module docstring); rendered in chunks of ``chunk``.
    ``mixed_only``: every code draws an independent w per row (the training data of the toy nets)."""
    if mixed_only:
        wplus = generator.sample_wplus(n, seed=seed, mix=True)
    else:
        half = n // 2
        wplus = torch.cat([generator.sample_wplus(half, seed=seed, mix=False),
                           generator.sample_wplus(n - half, seed=seed + 1, mix=True)])
        wplus = wplus[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    images, masks, coeffs = [], [], []
    for i in range(0, n, chunk):
        w = wplus[i:i + chunk]
        raw = generator.raw_features(w, noise_mode)
        images.append(generator.compose(raw))
        masks.append(raw[:, 3:4].clamp(0, 1))
        coeffs.append(generator.coefficients(w))
    return {"wplus": wplus, "image": torch.cat(images), "mask": torch.cat(masks), "coeffs": torch.cat(coeffs)}
