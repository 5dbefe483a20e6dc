"""Seeded toy-world samples for training and evaluating the toy networks.

``render_samples(generator, n, seed)`` -> dict with ``wplus [n,10,32]``, ``image [n,3,64,64]`` in
[-1,1], ``coeffs [n,30]`` (ground truth) and ``mask [n,1,64,64]`` in [0,1] (the rendered face
coverage). Half the codes repeat one w over all rows (as ``mapping`` + broadcast does), half draw an
independent w per row (``sample_wplus(mix=True)``), so every coefficient group varies independently.
``mixed_only=True`` gives only the latter (the toy networks' training data, see :func:`mixed_codes`).

Codes are drawn on the CPU from the seed (so every device renders the same codes); rendering runs
on the generator's device, and the returned tensors stay there (``image_dtype`` float16 halves the
memory of large training sets).
"""
from __future__ import annotations

import torch

IDENTITY_ROWS = 4   # W+ rows 0..3 carry identity (id + tex) in the toy world


def mixed_codes(wplus: torch.Tensor) -> torch.Tensor:
    """Bool ``[n]``: codes whose W+ rows are not all equal.

    In a code made by ``mapping`` + broadcast every row is the same w, so the background (row 8) is
    a perfect proxy of identity, expression and pose; a CNN trained on such codes learns to read the
    background instead of the face. Training on codes with independent rows removes that shortcut.
    """
    return (wplus - wplus[:, :1]).abs().amax(dim=(1, 2)) > 0


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
                   mixed_only: bool = False, image_dtype: torch.dtype = torch.float32) -> dict:
    """``n`` seeded toy samples (see module docstring); rendered in chunks of ``chunk``."""
    if mixed_only:
        wplus = generator.sample_wplus(n, seed=seed, mix=True)
    else:
        half = n // 2
        wplus = torch.cat([generator.sample_wplus(half, seed=seed, mix=False),
                           generator.sample_wplus(n - half, seed=seed + 1, mix=True)])
        wplus = wplus[torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(wplus.device)]
    return render_codes(generator, wplus, chunk, noise_mode, image_dtype)


def same_identity_partners(wplus: torch.Tensor, seed: int) -> torch.Tensor:
    """Partners ``[n,10,32]`` of ``wplus``: identity rows 0-3 kept, rows 4-9 (expression, pose,
    light, background, detail) from a seeded permutation of the codes."""
    n = wplus.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(wplus.device)
    return torch.cat([wplus[:, :IDENTITY_ROWS], wplus[perm, IDENTITY_ROWS:]], 1)


#: Coefficient groups whose directions :func:`attribute_tangents` samples (expression and pose).
ATTRIBUTE_TANGENT_GROUPS = ("exp", "angle", "trans")


def attribute_tangents(generator, wplus: torch.Tensor, per_code: int = 2, seed: int = 0,
                       groups=ATTRIBUTE_TANGENT_GROUPS, chunk: int = 64,
                       image_dtype: torch.dtype = torch.float16) -> dict:
    """Exact image tangents of W+ codes ``[n,10,32]`` along random attribute directions.

    For every code, ``per_code`` seeded directions ``t`` in coefficient space (Gaussian in units of
    each coefficient's scale, zero outside ``groups`` and for fixed coefficients) and the image
    tangent ``d image / d coeffs . t`` by forward-mode AD (:func:`torch.func.jvp`) through face
    model, renderer and compositing: the derivative the basis takes through the generator.

    Returns ``{"image": [n,3,R,R], "tangent": [n,per_code,3,R,R], "coeff_tangent": [n,per_code,30]}``
    on the generator's device (images in ``image_dtype``).
    """
    from torch.func import jvp

    from ipsb.backbone.toy import world

    device = generator.w_avg.device
    wplus = wplus.to(device)
    keep = torch.zeros(world.NUM_COEFFS)
    for name in groups:
        a, b = world.coeff_slices()[name]
        keep[a:b] = 1
    scale = generator.coeff_scale.cpu() * keep
    coeff_tangent = torch.randn(wplus.shape[0], per_code, world.NUM_COEFFS,
                                generator=torch.Generator().manual_seed(seed)) * scale
    coeff_tangent = coeff_tangent.to(device)
    images, tangents = [], []
    for i in range(0, wplus.shape[0], chunk):
        w = wplus[i:i + chunk]
        with torch.no_grad():
            coeffs = generator.coefficients(w)
        render = lambda c: generator.compose(generator.raw_features_of(c, w))
        per = []
        for k in range(per_code):
            image, tangent = jvp(render, (coeffs,), (coeff_tangent[i:i + chunk, k],))
            per.append(tangent.detach().to(image_dtype))
        images.append(image.detach().to(image_dtype))
        tangents.append(torch.stack(per, 1))
    return {"image": torch.cat(images), "tangent": torch.cat(tangents), "coeff_tangent": coeff_tangent}
