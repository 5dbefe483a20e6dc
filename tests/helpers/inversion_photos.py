"""Photo folders for inversion tests.

* :func:`toy_photos`: toy-world renders (64 px PNG, aligned by construction: the toy generator
  frames the face) and the W+ codes that made them.
* :func:`astronaut_photos`: real photographs that need alignment: variants of scikit-image's
  astronaut (the one offline photo with a face dlib finds) -- flipped, shrunk, enlarged, rotated,
  re-framed, recoloured -- so on-the-fly dlib alignment meets a different face geometry in each.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageEnhance


def save_rgb(image: torch.Tensor, path: Path) -> Path:
    """``[3,H,W]`` in [-1,1] -> 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = ((image.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)
    return path


def toy_photos(folder: Path, backbone, n: int = 8, seed: int = 3) -> torch.Tensor:
    """Write ``n`` toy renders ``folder/NNNNN.png``; returns their W+ codes ``[n,num_ws,w_dim]``."""
    with torch.no_grad():
        w = backbone.sample_wplus(n, seed=seed, truncation_psi=0.7)
        images = backbone.synthesize(w)
    for i, im in enumerate(images):
        save_rgb(im, Path(folder) / f"{i:05d}.png")
    return w


def astronaut_photos(folder: Path, n: int = 8) -> list[Path]:
    """Write up to 8 variants of skimage's astronaut as ``folder/astronaut_<k>_<what>.png``."""
    from skimage import data

    base = Image.fromarray(data.astronaut())
    w, h = base.size
    variants = [
        ("original", base),
        ("flipped", base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        ("shrunk", base.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        ("enlarged", base.crop((120, 20, 320, 220)).resize((600, 600), Image.Resampling.BICUBIC)),
        ("rotated", base.rotate(12, resample=Image.Resampling.BICUBIC, center=(220, 120))),
        ("reframed", base.crop((60, 0, 460, 300))),
        ("darker", ImageEnhance.Brightness(base).enhance(0.7)),
        ("grey", base.convert("L").convert("RGB")),
    ][:n]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (what, im) in enumerate(variants):
        paths.append(folder / f"astronaut_{k}_{what}.png")
        im.save(paths[-1])
    return paths


__all__ = ["toy_photos", "astronaut_photos", "save_rgb"]
