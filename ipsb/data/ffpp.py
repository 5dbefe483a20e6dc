"""FaceForensics++ evaluation data: pair items, the source gallery, and the DataModule.

Items (``FFPPPairs[i]``), all images ``[3,S,S]`` float32 in [-1,1] (FFHQ-aligned by the aligner)::

    {"sample_index": int, "target": [3,S,S], "source": [3,S,S],
     "target_id": int, "source_id": int,            # positions in the manifest's sorted video list
     "target_name": "000", "source_name": "003", "target_frame": int, "source_frame": int,
     "swap": [3,S,S], "swap_aligned": bool}          # only with swaps="manipulated" or a folder

``swaps``: ``None``; ``"manipulated"`` -- frame N of ``manipulated_sequences/<Method>/<comp>/videos/
TTT_SSS.mp4`` aligned like the target (FF++'s own swaps, the baseline rows); if the aligner finds no
face there the whole frame is resized instead and ``swap_aligned`` is False; or a folder of
precomputed swaps ``<folder>/TTT_SSS/frame_NNNN.png`` (N = target frame, 4 digits, already aligned;
resized to S if needed). Gallery items (``FFPPGallery[i]``): ``{"sample_index", "image", "video_id",
"video_name", "frame"}``. ``sample_index`` is the item's position, for exact DDP metrics.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ipsb.data.align import Aligner, NoFaceError
from ipsb.data.ffpp_index import build_ffpp_manifest
from ipsb.data.image_reader import image_to_tensor, read_rgb
from ipsb.data.manifest import Manifest
from ipsb.data.video import read_frames


def default_aligner(image_size: int):
    """The dlib FFHQ aligner (``ipsb[align]`` extra)."""
    from ipsb.data.align import FaceAligner

    return FaceAligner(output_size=image_size)


class _FrameCache:
    """Decodes, per video, all frames the manifest needs in one pass; keeps the last few videos."""

    def __init__(self, root: Path, needed: dict[str, set[int]], max_videos: int = 3):
        self.root, self.needed, self.max_videos = root, needed, max_videos
        self._cache: "OrderedDict[str, dict[int, np.ndarray]]" = OrderedDict()

    def get(self, rel: str, index: int) -> np.ndarray:
        if rel not in self._cache:
            self._cache[rel] = read_frames(self.root / rel, self.needed.get(rel, {index}) | {index})
            while len(self._cache) > self.max_videos:
                self._cache.popitem(last=False)
        self._cache.move_to_end(rel)
        frames = self._cache[rel]
        if index not in frames:
            frames.update(read_frames(self.root / rel, [index]))
        return frames[index]


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    return F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(-1, 1)


class _FFPPBase(Dataset):
    def __init__(self, root: str | os.PathLike, manifest: Manifest, aligner, image_size: int):
        self.root, self.manifest, self.aligner, self.image_size = Path(root), manifest, aligner, int(image_size)
        self.videos = manifest.data["videos"]
        self.video_names = sorted(self.videos)
        self.video_id = {v: i for i, v in enumerate(self.video_names)}
        self._frames: Optional[_FrameCache] = None  # built lazily in each worker

    def _needed(self) -> dict[str, set[int]]:
        raise NotImplementedError

    def _frame(self, rel: str, index: int) -> np.ndarray:
        if self._frames is None:
            self._frames = _FrameCache(self.root, self._needed())
        return self._frames.get(rel, index)

    def _aligned(self, video: str, index: int) -> torch.Tensor:
        rel = self.videos[video]["path"]
        try:
            img = self.aligner.align(self._frame(rel, index), name=f"{rel} frame {index}").image
        except NoFaceError as e:
            raise RuntimeError(f"FF++: no face in '{rel}' frame {index} although the manifest selected it; "
                               f"the aligner is not the one the manifest was built with or the file changed") from e
        if img.shape[-1] != self.image_size:
            raise ValueError(f"FF++: aligner returned {img.shape[-1]} px crops, expected {self.image_size}")
        return img


class FFPPPairs(_FFPPBase):
    """(target frame, source image[, swap]) items of the manifest; see the module docstring."""

    def __init__(self, root, manifest: Manifest, aligner, image_size: int = 256, swaps: Optional[str] = None):
        super().__init__(root, manifest, aligner, image_size)
        self.items = manifest.data["items"]
        self.swaps = swaps
        self.pair_video = {(p["target"], p["source"]): p["swap_video"] for p in manifest.data["pairs"]}

    def _needed(self):
        need: dict[str, set[int]] = {}
        for it in self.items:
            need.setdefault(self.videos[it["target"]]["path"], set()).add(it["target_frame"])
            need.setdefault(self.videos[it["source"]]["path"], set()).add(it["source_frame"])
            if self.swaps == "manipulated":
                need.setdefault(self.pair_video[(it["target"], it["source"])], set()).add(it["target_frame"])
        return need

    def __len__(self) -> int:
        return len(self.items)

    def _swap(self, it) -> tuple[torch.Tensor, bool]:
        t, s, n = it["target"], it["source"], it["target_frame"]
        if self.swaps == "manipulated":
            rel = self.pair_video[(t, s)]
            frame = self._frame(rel, n)
            try:
                return self.aligner.align(frame, name=f"{rel} frame {n}").image, True
            except NoFaceError:
                return _resize(image_to_tensor(frame), self.image_size), False
        path = Path(self.swaps) / f"{t}_{s}" / f"frame_{n:04d}.png"
        if not path.is_file():
            raise FileNotFoundError(f"FF++: precomputed swap '{path}' is missing (expected <folder>/TTT_SSS/frame_NNNN.png)")
        return _resize(image_to_tensor(read_rgb(path)), self.image_size), True

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        out = {"sample_index": it["sample_index"],
               "target": self._aligned(it["target"], it["target_frame"]),
               "source": self._aligned(it["source"], it["source_frame"]),
               "target_id": self.video_id[it["target"]], "source_id": self.video_id[it["source"]],
               "target_name": it["target"], "source_name": it["source"],
               "target_frame": it["target_frame"], "source_frame": it["source_frame"]}
        if self.swaps is not None:
            out["swap"], out["swap_aligned"] = self._swap(it)
        return out


class FFPPGallery(_FFPPBase):
    """The selected frames of every source video, for :class:`ipsb.metrics.IDRetrieval`'s gallery."""

    def __init__(self, root, manifest: Manifest, aligner, image_size: int = 256):
        super().__init__(root, manifest, aligner, image_size)
        self.items = manifest.data["gallery"]

    def _needed(self):
        need: dict[str, set[int]] = {}
        for it in self.items:
            need.setdefault(self.videos[it["video"]]["path"], set()).add(it["frame"])
        return need

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        return {"sample_index": it["sample_index"], "image": self._aligned(it["video"], it["frame"]),
                "video_id": self.video_id[it["video"]], "video_name": it["video"], "frame": it["frame"]}


class FFPPDataModule(LightningDataModule):
    """FF++ evaluation: ``test_dataloader()`` -> ``[pairs, gallery]`` loaders (in that order; only
    ``[pairs]`` when :attr:`gallery_loader` is False, which the evaluator sets for a retrieval gallery
    made of the items' own source images).

    Args:
        root: FF++ root (``original_sequences/``, ``manipulated_sequences/``).
        method: manipulation whose file names define the pairs (``FaceShifter``: the usual 1,000).
        compression: ``c23`` (or ``raw``, ``c40``).
        frames_per_video: slots per target video (10).
        source_frame: ``"first"`` (frame 0 of the source; default) or ``"same"`` (frame N of the source).
        image_size: aligned crop side (256).
        aligner: object with ``align(uint8 HWC) -> AlignedFace``; default dlib ``FaceAligner(image_size)``;
            :class:`ipsb.data.simple_aligners.CenterCropAligner` for pre-aligned/toy frames.
        manifest_path: JSON manifest; loaded when it exists (and ``rebuild`` is False), else built and saved.
        verify_files: re-hash the videos when loading a manifest (refuse changed files).
        swaps: ``None``, ``"manipulated"`` or a folder of precomputed swaps (module docstring).
        limit_pairs: keep only the first pairs (quick runs).
    """

    def __init__(self, root: str, method: str = "FaceShifter", compression: str = "c23",
                 frames_per_video: int = 10, source_frame: str = "first", image_size: int = 256,
                 aligner: Optional[Aligner] = None, manifest_path: Optional[str] = None, rebuild: bool = False,
                 verify_files: bool = True, swaps: Optional[str] = None, limit_pairs: Optional[int] = None,
                 batch_size: int = 16, num_workers: int = 0):
        super().__init__()
        self.root = Path(root)
        self.method, self.compression, self.frames_per_video = method, compression, frames_per_video
        self.source_frame, self.image_size, self.limit_pairs = source_frame, image_size, limit_pairs
        self.aligner = aligner
        self.manifest_path, self.rebuild, self.verify = manifest_path, rebuild, verify_files
        self.swaps, self.batch_size, self.num_workers = swaps, batch_size, num_workers
        self.manifest: Optional[Manifest] = None
        self.gallery_loader = True

    def _aligner(self):
        if self.aligner is None:
            self.aligner = default_aligner(self.image_size)
        return self.aligner

    def _build(self) -> Manifest:
        return build_ffpp_manifest(self.root, self._aligner(), self.method, self.compression,
                                   self.frames_per_video, self.source_frame, self.limit_pairs)

    def prepare_data(self) -> None:
        """Build and save the manifest once (rank 0) when a path is configured and none exists."""
        if self.manifest_path and (self.rebuild or not Path(self.manifest_path).is_file()):
            self._build().save(self.manifest_path)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.manifest is not None:
            return
        if self.manifest_path and Path(self.manifest_path).is_file():
            m = Manifest.load(self.manifest_path, kind="ffpp")
            if self.verify:
                m.verify_files(self.root)
            want = {"method": self.method, "compression": self.compression,
                    "frames_per_video": self.frames_per_video, "source_frame": self.source_frame,
                    "limit_pairs": self.limit_pairs}
            diff = {k: (m.config.get(k), v) for k, v in want.items() if m.config.get(k) != v}
            if diff:
                raise ValueError(f"manifest '{self.manifest_path}' was built with other settings "
                                 f"(manifest, config): {diff}; set rebuild: true or another manifest_path")
            self.manifest = m
        else:
            self.manifest = self._build()
            if self.manifest_path:
                self.manifest.save(self.manifest_path)

    def pairs_dataset(self) -> FFPPPairs:
        self.setup()
        return FFPPPairs(self.root, self.manifest, self._aligner(), self.image_size, self.swaps)

    def gallery_dataset(self) -> FFPPGallery:
        self.setup()
        return FFPPGallery(self.root, self.manifest, self._aligner(), self.image_size)

    def _loader(self, ds) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self):
        pairs = [self._loader(self.pairs_dataset())]
        return pairs + [self._loader(self.gallery_dataset())] if self.gallery_loader else pairs

    def predict_dataloader(self):
        return self._loader(self.pairs_dataset())
