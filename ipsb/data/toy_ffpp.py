"""A small synthetic FaceForensics++ tree rendered from the toy world, and its DataModule.

Layout (the official one, so :class:`ipsb.data.ffpp.FFPPDataModule` reads it unchanged)::

    <root>/original_sequences/youtube/c23/videos/NNN.mp4             one toy identity per video
    <root>/manipulated_sequences/ToyRowSwap/c23/videos/TTT_SSS.mp4   the toy "manipulation"
    <root>/toy_ffpp.json                                             how it was built (checked on reuse)

Videos are lossless (``libx264rgb``, qp 0) ``RESOLUTION`` px square frames, already "aligned" (the
toy generator frames the face), so :class:`~ipsb.data.simple_aligners.CenterCropAligner` aligns them.

* An original video ``v``: W+ rows 0-3 (identity), 8 (background) and 9 (detail) come from one seeded
  w; rows 4-7 (expression, pose, lighting) move smoothly from one seeded w to another over the frames
  (cosine ease), so expression and pose change along the video like a talking head.
* The toy manipulation ``ToyRowSwap`` (FF++'s baseline rows): frame N of ``TTT_SSS`` is target frame N
  with W+ rows 0-3 (the identity rows) replaced by those of source frame 0 -- an imperfect swap on
  purpose: row 3 also drives expression in the toy world, so the source's expression leaks in.
* Pairs: target ``i`` gets source ``(i + 1) mod N`` (every video is a target once and a source once,
  like FF++'s 1,000 pairs).

Everything is seeded: the same arguments give the same codes (the mp4 bytes depend on the encoder).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ipsb.data.ffpp import FFPPDataModule
from ipsb.data.ffpp_index import manipulated_dir, original_dir
from ipsb.data.align import Aligner
from ipsb.data.simple_aligners import CenterCropAligner
from ipsb.data.video import write_video

TOY_METHOD = "ToyRowSwap"
MARKER = "toy_ffpp.json"
FORMAT_VERSION = 2
SWAP_ROWS = (0, 1, 2, 3)
STATIC_ROWS = (0, 1, 2, 3, 8, 9)
MOVING_ROWS = (4, 5, 6, 7)


def toy_pairs(num_videos: int) -> list[tuple[int, int]]:
    """(target, source) video numbers: ``(i, (i + 1) % num_videos)``."""
    return [(i, (i + 1) % num_videos) for i in range(num_videos)]


def video_codes(generator, num_videos: int, num_frames: int, seed: int = 0,
                truncation_psi: float = 0.7) -> torch.Tensor:
    """W+ codes ``[num_videos, num_frames, num_ws, w_dim]`` of the original toy videos (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_videos, 3, generator.z_dim, generator=g).to(generator.w_avg.device)
    with torch.no_grad():
        w = generator.mapping(z.flatten(0, 1), truncation_psi=truncation_psi).view(num_videos, 3, -1)
    t = torch.linspace(0, 1, num_frames, device=w.device)
    ease = (0.5 - 0.5 * torch.cos(math.pi * t))[None, :, None]                   # [1,F,1]
    moving = w[:, 1:2] + (w[:, 2:3] - w[:, 1:2]) * ease                           # [V,F,w_dim]
    codes = w[:, 0, None, None, :].expand(num_videos, num_frames, generator.num_ws, generator.w_dim).clone()
    for r in MOVING_ROWS:
        codes[:, :, r] = moving
    return codes


def row_swap(target_codes: torch.Tensor, source_code: torch.Tensor, rows=SWAP_ROWS) -> torch.Tensor:
    """The toy manipulation: target W+ ``[F,num_ws,w_dim]`` with ``rows`` from ``source_code`` ``[num_ws,w_dim]``."""
    out = target_codes.clone()
    out[:, list(rows)] = source_code[list(rows)]
    return out


def _frames(generator, codes: torch.Tensor, chunk: int = 32) -> list[np.ndarray]:
    out = []
    with torch.no_grad():
        for i in range(0, codes.shape[0], chunk):
            img = generator.synthesis(codes[i:i + chunk], noise_mode="const")
            out += list(((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return out


def build_toy_ffpp(root: str | os.PathLike, num_videos: int = 6, num_frames: int = 12, seed: int = 0,
                   generator_seed: int = 0, compression: str = "c23") -> Path:
    """Render the tree under ``root`` unless it is already there with the same settings; returns root.

    A tree built with other settings is refused (ValueError) rather than overwritten.
    """
    from ipsb.backbone.toy.generator import ToyGenerator

    if num_videos < 2 or num_frames < 1:
        raise ValueError(f"the toy FF++ tree needs >= 2 videos and >= 1 frame, got {num_videos}, {num_frames}")
    root = Path(root)
    settings = {"version": FORMAT_VERSION, "num_videos": num_videos, "num_frames": num_frames, "seed": seed,
                "generator_seed": generator_seed, "compression": compression, "method": TOY_METHOD}
    marker = root / MARKER
    if marker.is_file():
        have = json.loads(marker.read_text())
        if have != settings:
            raise ValueError(f"'{root}' holds a toy FF++ tree built with {have}, not {settings}; "
                             f"use another root or delete it")
        return root
    gen = ToyGenerator(seed=generator_seed).eval()
    codes = video_codes(gen, num_videos, num_frames, seed)
    orig = root / original_dir(compression)
    man = root / manipulated_dir(TOY_METHOD, compression)
    orig.mkdir(parents=True, exist_ok=True)
    man.mkdir(parents=True, exist_ok=True)
    name = lambda i: f"{i:03d}"
    for v in range(num_videos):
        write_video(orig / f"{name(v)}.mp4", _frames(gen, codes[v]))
    for t, s in toy_pairs(num_videos):
        write_video(man / f"{name(t)}_{name(s)}.mp4", _frames(gen, row_swap(codes[t], codes[s, 0])))
    marker.write_text(json.dumps(settings, indent=1, sort_keys=True))  # written last: a complete tree
    return root


class ToyFFPPDataModule(FFPPDataModule):
    """:class:`FFPPDataModule` over the toy tree, building it at ``root`` first when missing.

    Defaults: ``method="ToyRowSwap"``, 4 frames per video, 64 px, ``CenterCropAligner``,
    ``swaps="manipulated"`` (the toy manipulation's own videos: the baseline row). Other args as
    :class:`FFPPDataModule`; ``num_videos``/``num_frames``/``seed`` shape the tree.
    """

    def __init__(self, root: str = "outputs/toy/ffpp", num_videos: int = 6, num_frames: int = 12, seed: int = 0,
                 method: str = TOY_METHOD, frames_per_video: int = 4, source_frame: str = "first",
                 image_size: int = 64, manifest_path: Optional[str] = None, rebuild: bool = False,
                 swaps: Optional[str] = "manipulated", limit_pairs: Optional[int] = None, batch_size: int = 8,
                 num_workers: int = 0, aligner: Optional[Aligner] = None):
        super().__init__(root=root, method=method, compression="c23", frames_per_video=frames_per_video,
                         source_frame=source_frame, image_size=image_size,
                         aligner=aligner if aligner is not None else CenterCropAligner(output_size=image_size),
                         manifest_path=manifest_path, rebuild=rebuild, verify_files=True, swaps=swaps,
                         limit_pairs=limit_pairs, batch_size=batch_size, num_workers=num_workers)
        self.num_videos, self.num_frames, self.seed = num_videos, num_frames, seed

    def _ensure_tree(self) -> None:
        build_toy_ffpp(self.root, self.num_videos, self.num_frames, self.seed)

    def prepare_data(self) -> None:
        self._ensure_tree()
        super().prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.manifest is None and not (self.root / MARKER).is_file():
            self._ensure_tree()
        super().setup(stage)
