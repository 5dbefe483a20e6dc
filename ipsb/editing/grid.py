"""Labelled image grids and animations of edits, drawn with PIL.

A grid is a list of :class:`Strip` s, one per row: a row label (drawn left of the row) and cells,
each an image ``[3,R,R]`` in [-1,1] with a caption drawn under it (the step or the attribute value).
Rows may have different lengths. :func:`animation_frames` turns the strips into frames (frame ``j``
stacks cell ``j`` of every row, with the row labels), for a GIF (PIL) or an MP4
(:class:`ipsb.video_io.Mp4Writer`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

PAD = 4
CAPTION = 14


@dataclass
class Strip:
    """One row of a grid: ``label``, cell images ``[3,R,R]`` in [-1,1], one caption per cell."""

    label: str
    images: list[torch.Tensor]
    captions: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.captions:
            self.captions = [""] * len(self.images)
        if len(self.captions) != len(self.images):
            raise ValueError(f"strip {self.label!r}: {len(self.images)} images but {len(self.captions)} captions")


def to_uint8(image: torch.Tensor, tile: int) -> np.ndarray:
    """``[3,R,R]`` in [-1,1] -> uint8 ``[tile,tile,3]`` (nearest-neighbour upscaling keeps pixels sharp)."""
    x = image.detach().float().cpu()[None]
    if x.shape[-1] != tile:
        mode = "nearest" if tile > x.shape[-1] else "area"
        x = torch.nn.functional.interpolate(x, size=(tile, tile), mode=mode)
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _label_width(labels: Sequence[str]) -> int:
    from PIL import Image, ImageDraw

    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font()
    return max([int(draw.textlength(t, font=font)) for t in labels] + [0]) + 2 * PAD


def draw_grid(strips: Sequence[Strip], tile: int = 128, title: str = ""):
    """Strips -> a PIL RGB image: row labels on the left, captions under each cell, optional title."""
    from PIL import Image, ImageDraw

    if not strips:
        raise ValueError("nothing to draw: no strips")
    font = _font()
    lw = _label_width([s.label for s in strips])
    cols = max(len(s.images) for s in strips)
    top = (CAPTION + PAD) if title else 0
    row_h = tile + CAPTION + PAD
    width = lw + cols * (tile + PAD) + PAD
    height = top + len(strips) * row_h + PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((PAD, PAD // 2), title, fill="black", font=font)
    for r, strip in enumerate(strips):
        y = top + PAD + r * row_h
        draw.text((PAD, y + tile // 2 - 6), strip.label, fill="black", font=font)
        for c, (img, cap) in enumerate(zip(strip.images, strip.captions)):
            x = lw + c * (tile + PAD)
            canvas.paste(Image.fromarray(to_uint8(img, tile)), (x, y))
            tw = draw.textlength(cap, font=font)
            draw.text((x + (tile - tw) / 2, y + tile + 1), cap, fill="black", font=font)
    return canvas


def animation_frames(strips: Sequence[Strip], tile: int = 128, bounce: bool = True) -> list[np.ndarray]:
    """Frame ``j`` = cell ``j`` of every row (shorter rows hold their last cell), labelled; with
    ``bounce`` the sequence runs forth and back. uint8 ``[H,W,3]`` frames of even sides."""
    n = max(len(s.images) for s in strips)
    order = list(range(n)) + (list(range(n - 2, 0, -1)) if bounce else [])
    frames = []
    for j in order:
        column = [Strip(s.label, [s.images[min(j, len(s.images) - 1)]], [s.captions[min(j, len(s.images) - 1)]])
                  for s in strips]
        frame = np.asarray(draw_grid(column, tile))
        h, w = frame.shape[:2]
        frames.append(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]))
    return frames


def write_animation(strips: Sequence[Strip], path: str | Path, tile: int = 128, fps: float = 6.0) -> Path:
    """A ``.gif`` (PIL, looping) or ``.mp4`` (H.264, :class:`~ipsb.video_io.Mp4Writer`) of the strips."""
    from PIL import Image

    path = Path(path)
    frames = animation_frames(strips, tile)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    elif path.suffix.lower() == ".mp4":
        from ipsb.video_io import Mp4Writer

        with Mp4Writer(path, fps) as writer:
            for f in frames:
                writer.write(f)
    else:
        raise ValueError(f"animation '{path}' must end in .gif or .mp4")
    return path
