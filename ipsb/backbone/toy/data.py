"""Seeded toy-world samples for evaluating (and training) the toy networks.

``render_samples(generator, n, seed)`` -> dict with ``wplus [n,10,32]``, ``image [n,3,64,64]`` in
[-1,1], ``coeffs [n,30]`` (ground truth) and ``mask [n,1,64,64]`` in [0,1] (the rendered face
coverage). Half the codes repeat one w over all rows (as ``mapping`` + broadcast does), half draw an
independent w per row (``sample_wplus(mix=True)``), so every coefficient group varies independently.
``mixed_only=True`` gives only the latter, and ``truncation_psi`` truncates every w.

In a code made by ``mapping`` + broadcast every row is the same w, so the background (row 8) is a
perfect proxy of identity, expression and pose; a CNN trained on such codes learns to read the
background instead of the face. The toy networks therefore train on codes with independent rows
(:mod:`ipsb.training.toy_networks`).

Codes are drawn on the CPU from the seed (so every device renders the same codes); rendering runs
on the generator's device, and the returned tensors stay there (``image_dtype`` float16 halves the
memory of large training sets).
"""
from __future__ import annotations

import torch

IDENTITY_ROWS = 4   # W+ rows 0..3 carry identity (id + tex) in the toy world


@torch.no_grad()
def render_codes(generator, wplus: torch.Tensor, chunk: int = 256, noise_mode: str = "const",
                 image_dtype: torch.dtype = torch.float32) -> dict:
    """Render W+ codes ``[n,10,32]`` in chunks -> ``{"wplus", "image", "mask", "coeffs"}``."""
    device = generator.w_avg.device
    wplus = wplus.to(device)
    images, masks, coeffs = [], [], []
    for i in range(0, wplus.shape[0], chunk):
        w = wplus[i:i + chunk]
        raw = generator.raw_features(w, noise_mode)
        images.append(generator.compose(raw).to(image_dtype))
        masks.append(raw[:, 3:4].clamp(0, 1).to(image_dtype))
        coeffs.append(generator.coefficients(w))
    return {"wplus": wplus, "image": torch.cat(images), "mask": torch.cat(masks), "coeffs": torch.cat(coeffs)}


@torch.no_grad()
def render_samples(generator, n: int, seed: int, chunk: int = 256, noise_mode: str = "const",
                   mixed_only: bool = False, image_dtype: torch.dtype = torch.float32,
                   truncation_psi: float = 1.0) -> dict:
    """``n`` seeded toy samples (see module docstring); rendered in chunks of ``chunk``."""
    if mixed_only:
        wplus = generator.sample_wplus(n, seed=seed, truncation_psi=truncation_psi, mix=True)
    else:
        half = n // 2
        wplus = torch.cat([generator.sample_wplus(half, seed=seed, truncation_psi=truncation_psi, mix=False),
                           generator.sample_wplus(n - half, seed=seed + 1, truncation_psi=truncation_psi, mix=True)])
        wplus = wplus[torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(wplus.device)]
    return render_codes(generator, wplus, chunk, noise_mode, image_dtype)
