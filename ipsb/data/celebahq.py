"""CelebA-HQ evaluation pairs: an image folder plus a pairs list.

Pairs file: one pair per line, ``SOURCE TARGET`` (whitespace or comma separated; names relative to
the image folder, e.g. ``12.jpg 345.jpg``); empty lines and ``#`` comments are ignored. An item::

    {"sample_index": int, "source": [3,S,S], "target": [3,S,S] (float32 in [-1,1]),
     "source_name": str, "target_name": str}

With ``swaps`` (a folder) the item also has ``"swap"`` read from ``<swaps>/<i:06d>.png`` (i = pair
index). ``files()`` of :class:`CelebAHQPairs` is the sorted image list (for the FID cache hash).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ipsb.data.image_folder import list_images, load_image


def read_pairs(path: str | os.PathLike, image_root: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse a pairs file -> [(source, target)]; ValueError naming the line for bad/missing entries."""
    root, pairs = Path(image_root), []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'SOURCE TARGET', got {line!r}")
        for name in parts:
            if not (root / name).is_file():
                raise ValueError(f"{path}:{n}: image '{name}' not found under '{root}'")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise ValueError(f"pairs file '{path}' lists no pairs")
    return pairs


class CelebAHQPairs(Dataset):
    """(source, target[, swap]) items; see the module docstring."""

    def __init__(self, image_root: str | os.PathLike, pairs_file: str | os.PathLike, image_size: int = 256,
                 swaps: Optional[str] = None):
        self.root, self.image_size, self.swaps = Path(image_root), image_size, swaps
        self.pairs = read_pairs(pairs_file, image_root)

    def files(self) -> list[str]:
        return list_images(self.root)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        s, t = self.pairs[i]
        out = {"sample_index": i, "source": load_image(self.root / s, self.image_size),
               "target": load_image(self.root / t, self.image_size), "source_name": s, "target_name": t}
        if self.swaps is not None:
            p = Path(self.swaps) / f"{i:06d}.png"
            if not p.is_file():
                raise FileNotFoundError(f"CelebA-HQ: precomputed swap '{p}' for pair {i} ({s} -> {t}) is missing")
            out["swap"] = load_image(p, self.image_size)
        return out


class CelebAHQDataModule(LightningDataModule):
    """CelebA-HQ evaluation: ``test_dataloader()``/``predict_dataloader()`` over the pairs."""

    def __init__(self, image_root: str, pairs_file: str, image_size: int = 256, swaps: Optional[str] = None,
                 batch_size: int = 16, num_workers: int = 0):
        super().__init__()
        self.image_root, self.pairs_file, self.image_size, self.swaps = image_root, pairs_file, image_size, swaps
        self.batch_size, self.num_workers = batch_size, num_workers
        self.dataset: Optional[CelebAHQPairs] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.dataset is None:
            self.dataset = CelebAHQPairs(self.image_root, self.pairs_file, self.image_size, self.swaps)

    def test_dataloader(self):
        self.setup()
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def predict_dataloader(self):
        return self.test_dataloader()
