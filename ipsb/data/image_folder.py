"""Folders of aligned face images (FFHQ) as a Dataset and a DataModule.

``ImageFolderDataset(root)`` lists ``*.png/*.jpg/*.jpeg/*.webp`` under ``root`` recursively, sorted by
relative path (the order, and so ``sample_index``, is reproducible); an item is
``{"image": [3,S,S] float32 in [-1,1], "sample_index": int, "name": relative path, "path": file}``.
Images are already aligned; non-square images are refused, others resized (antialiased bilinear) to
``image_size``. With ``align=True`` they are any photos instead, FFHQ-aligned on the fly to
``image_size`` by :class:`ipsb.data.align.FaceAligner` (dlib, the ``ipsb[align]`` extra).
``files()`` gives the relative paths: the dataset list hashed by the FID real-statistics cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ipsb.data.batch_groups import BatchGroups
from ipsb.data.image_reader import image_to_tensor, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(root: str | os.PathLike) -> list[str]:
    """Sorted relative paths of the images under ``root``; ValueError if none or no folder."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder '{root}' does not exist")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under '{root}'")
    return files


def load_image(path: str | os.PathLike, image_size: Optional[int] = None) -> torch.Tensor:
    """An aligned face image file -> ``[3,S,S]`` float32 in [-1,1] (resized to ``image_size`` if given).

    Read with :func:`ipsb.data.image_reader.read_rgb` (EXIF orientation, 16-bit, CMYK, palette; an
    unreadable file raises ImageReadError naming it)."""
    rgb = read_rgb(path)
    if rgb.shape[0] != rgb.shape[1]:
        raise ValueError(f"'{path}' is {rgb.shape[1]}x{rgb.shape[0]}; aligned face images must be square")
    img = image_to_tensor(rgb)
    if image_size is not None and img.shape[-1] != image_size:
        img = F.interpolate(img[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                            antialias=True)[0].clamp(-1, 1)
    return img


class ImageFolderDataset(Dataset):
    """Aligned images of a folder; see the module docstring."""

    def __init__(self, root: str | os.PathLike, image_size: Optional[int] = 256, limit: Optional[int] = None,
                 align: bool = False):
        self.root, self.image_size = Path(root), image_size
        self._files = list_images(root)[:limit]
        if align and image_size is None:
            raise ValueError("align=True needs an image_size (the side of the aligned crop)")
        self.aligner = None
        if align:
            from ipsb.data.align import FaceAligner

            self.aligner = FaceAligner(output_size=int(image_size))

    def files(self) -> list[str]:
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, i: int) -> dict:
        path = self.root / self._files[i]
        if self.aligner is None:
            image = load_image(path, self.image_size)
        else:
            image = self.aligner.align(read_rgb(path), name=str(path)).image
        return {"image": image, "sample_index": i, "name": self._files[i], "path": str(path)}


class FFHQDataModule(LightningDataModule):
    """FFHQ (or any folder of aligned faces): train/val/test/predict loaders over one folder.

    ``val_fraction`` of the sorted list (taken from the end) is the validation split; test and
    predict use the whole folder. ``align``: the photos are not aligned; align each on the fly
    (see the module docstring). Predict batches are fixed groups of the sorted list, the same for
    any number of processes; a resumed prediction run leaves out the batches it already has
    (:meth:`exclude_from_predict`; :meth:`predict_names` lists every sample).
    """

    def __init__(self, root: str, image_size: int = 256, batch_size: int = 8, num_workers: int = 0,
                 val_fraction: float = 0.0, limit: Optional[int] = None, seed: int = 0, align: bool = False):
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0,1), got {val_fraction}")
        self.save_hyperparameters()
        self.root, self.image_size, self.batch_size, self.num_workers = root, image_size, batch_size, num_workers
        self.val_fraction, self.limit, self.seed, self.align = val_fraction, limit, seed, align
        self.dataset: Optional[ImageFolderDataset] = None
        self.predict_excluded: set[int] = set()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.dataset is None:
            self.dataset = ImageFolderDataset(self.root, self.image_size, self.limit, align=self.align)
        n_val = int(round(len(self.dataset) * self.val_fraction))
        self.train_indices = list(range(len(self.dataset) - n_val))
        self.val_indices = list(range(len(self.dataset) - n_val, len(self.dataset)))

    def _loader(self, indices, shuffle: bool) -> DataLoader:
        ds = torch.utils.data.Subset(self.dataset, indices)
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers, generator=g)

    def train_dataloader(self):
        return self._loader(self.train_indices, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_indices, shuffle=False)

    def test_dataloader(self):
        return self._loader(range(len(self.dataset)), shuffle=False)

    def predict_names(self) -> list[str]:
        """Relative paths of every predict sample, in ``sample_index`` order."""
        if self.dataset is None:
            self.setup("predict")
        return self.dataset.files()

    def exclude_from_predict(self, indices) -> None:
        """Leave these sample indices out of :meth:`predict_dataloader` (already predicted)."""
        self.predict_excluded |= {int(i) for i in indices}

    def predict_dataloader(self):
        """Fixed batches (:class:`ipsb.data.batch_groups.BatchGroups`): batch ``k`` holds samples
        ``[k*batch_size, (k+1)*batch_size)`` for any number of processes; done batches are left out."""
        return BatchGroups(self.dataset, self.batch_size, skip=self.predict_excluded).loader(self.num_workers)
