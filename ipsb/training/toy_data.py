"""Training data of the toy networks: rendered shards, same-identity partners, attribute tangents.

Everything is seeded and may be cached in a folder between runs (:func:`cached`): rendering 32,768
toy codes takes minutes on a CPU, and the networks are trained in separate processes.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ipsb.backbone.toy import world
from ipsb.backbone.toy.data import IDENTITY_ROWS, render_codes, render_samples

#: Coefficient groups whose directions :func:`attribute_tangents` samples (expression and pose).
ATTRIBUTE_TANGENT_GROUPS = ("exp", "angle", "trans")


def same_identity_partners(wplus: torch.Tensor, seed: int) -> torch.Tensor:
    """Partners ``[n,10,32]`` of ``wplus``: identity rows 0-3 kept, rows 4-9 (expression, pose,
    light, background, detail) from a seeded permutation of the codes."""
    n = wplus.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(wplus.device)
    return torch.cat([wplus[:, :IDENTITY_ROWS], wplus[perm, IDENTITY_ROWS:]], 1)


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


def cached(cache_dir, name: str, device, make, label: str) -> dict:
    """``make()`` (a dict of tensors; its time is logged as "rendered ``label``"), read from / written to
    ``cache_dir / name`` when a cache folder is given."""
    path = Path(cache_dir) / name if cache_dir else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True, map_location=device)
    t0 = time.time()
    out = make()
    print(f"rendered {label} ({time.time() - t0:.0f}s)", flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
    return out


def load_or_render_shard(gen, cache_dir, n: int, seed: int, partner_seed: int, dtype) -> dict:
    """Training shard of ``n`` mixed codes (seed ``seed``) with same-identity partners of its first half:
    ``{"train": render dict, "partner": render dict}``, cached in ``cache_dir`` if given."""
    def render() -> dict:
        tr = render_samples(gen, n, seed=seed, mixed_only=True, image_dtype=dtype)
        partner = render_codes(gen, same_identity_partners(tr["wplus"][:n // 2], seed=partner_seed), image_dtype=dtype)
        return {"train": tr, "partner": partner}

    return cached(cache_dir, f"shard_{seed}_{n}_{partner_seed}.pt", gen.w_avg.device, render,
                  f"shard {seed}: {n} codes + {n // 2} partners")


def load_or_render_encoder_shard(gen, cache_dir, n: int, seed: int, truncation_psi: float, dtype) -> dict:
    """Encoder training shard: ``n`` mixed codes truncated by ``truncation_psi`` (seed ``seed``) and their
    images, ``{"wplus", "image"}``, cached in ``cache_dir`` if given."""
    def render() -> dict:
        out = render_samples(gen, n, seed=seed, mixed_only=True, image_dtype=dtype, truncation_psi=truncation_psi)
        return {"wplus": out["wplus"], "image": out["image"]}

    return cached(cache_dir, f"encoder_shard_{seed}_{n}_psi{truncation_psi:g}.pt", gen.w_avg.device, render,
                  f"encoder shard {seed}: {n} codes at truncation {truncation_psi:g}")


def load_or_render_tangents(gen, cache_dir, wplus, seed: int, per_code: int) -> dict:
    """:func:`attribute_tangents` of ``wplus`` (seed ``seed``), cached in ``cache_dir`` if given."""
    return cached(cache_dir, f"tangents_{seed}_{wplus.shape[0]}_{per_code}.pt", gen.w_avg.device,
                  lambda: attribute_tangents(gen, wplus, per_code=per_code, seed=seed),
                  f"{per_code} attribute tangents of {wplus.shape[0]} codes")
