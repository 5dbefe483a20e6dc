"""Streaming video output for the swapper: frame rate of an input, an audio-free H.264 mp4 writer.

Reading reuses :func:`ipsb.data.video.iter_frames` (uint8 RGB ``[H,W,3]`` frames, decode order).
:class:`Mp4Writer` encodes frames one at a time (no whole clip in memory) with PyAV as
H.264 ``yuv420p`` (what every player reads; ``crf`` sets quality) or, with ``lossless=True``, as
``libx264rgb`` at qp 0 (pixel-exact, used by tests). ``yuv420p`` needs even sides, so odd-sized
frames are padded by one replicated row/column.
"""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def frame_rate(path: str | os.PathLike, default: float = 25.0) -> Fraction:
    """The average frame rate of the first video stream of ``path`` (``default`` when unknown)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"'{path}' has no video stream")
            rate = container.streams.video[0].average_rate
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"cannot open video '{path}': {e}") from e
    return Fraction(rate) if rate else Fraction(default).limit_denominator(1001)


class Mp4Writer:
    """``with Mp4Writer(path, fps) as w: w.write(rgb uint8 [H,W,3])`` -> an audio-free mp4.

    All frames must share the first frame's size. ``lossless``: libx264rgb qp 0 (exact pixels).
    """

    def __init__(self, path: str | os.PathLike, fps=25, crf: int = 18, lossless: bool = False):
        self.path, self.fps, self.crf, self.lossless = str(path), Fraction(fps).limit_denominator(100000), crf, lossless
        self.container = self.stream = None
        self.size = None
        self.frames = 0

    def __enter__(self) -> "Mp4Writer":
        self.container = av.open(self.path, mode="w")
        return self

    def _open_stream(self, h: int, w: int) -> None:
        codec = "libx264rgb" if self.lossless else "libx264"
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.size = (h, w)
        pad_h, pad_w = (h, w) if self.lossless else (h + h % 2, w + w % 2)
        self.stream.height, self.stream.width = pad_h, pad_w
        self.stream.pix_fmt = "rgb24" if self.lossless else "yuv420p"
        self.stream.options = {"qp": "0", "preset": "ultrafast"} if self.lossless else {"crf": str(self.crf)}

    def write(self, rgb: np.ndarray) -> None:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"Mp4Writer: frames must be uint8 RGB [H,W,3], got {rgb.shape}")
        if self.stream is None:
            self._open_stream(*rgb.shape[:2])
        if rgb.shape[:2] != self.size:
            raise ValueError(f"Mp4Writer: all frames must be {self.size}, got {rgb.shape[:2]}")
        if not self.lossless and (rgb.shape[0] % 2 or rgb.shape[1] % 2):
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def __exit__(self, *exc) -> None:
        try:
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
