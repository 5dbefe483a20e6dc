"""Video frames with PyAV: count, decode selected frames, write small videos (tests, toy world).

Frames are uint8 RGB numpy arrays ``[H,W,3]``, indexed 0..len-1 in decode (presentation) order.
Decoding is sequential (no seeking), so the selected frames are exact and reproducible whatever
the container's keyframe layout; :func:`read_frames` stops after the last frame asked for.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Optional, Sequence

import av
import numpy as np


def _open(path: str | os.PathLike):
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"cannot open video '{path}': {e}") from e


def iter_frames(path: str | os.PathLike, stop: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb uint8 [H,W,3])`` for frames ``0..stop-1`` (all if ``stop`` is None)."""
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"'{path}' has no video stream")
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if stop is not None and i >= stop:
                return
            yield i, frame.to_ndarray(format="rgb24")


def count_frames(path: str | os.PathLike) -> int:
    """Number of decodable frames (counted by decoding, not trusted from the header)."""
    n = 0
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"'{path}' has no video stream")
        for _ in container.decode(container.streams.video[0]):
            n += 1
    return n


def read_frames(path: str | os.PathLike, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """Decode the frames with the given indices -> ``{index: rgb uint8 [H,W,3]}``.

    Raises ValueError naming the video when an index is past its end.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    if wanted[0] < 0:
        raise ValueError(f"negative frame index {wanted[0]} for '{path}'")
    want = set(wanted)
    out, n = {}, 0
    for i, f in iter_frames(path, stop=wanted[-1] + 1):
        n = i + 1
        if i in want:
            out[i] = f
    missing = [i for i in wanted if i not in out]
    if missing:
        raise ValueError(f"video '{path}' has no frame {missing[0]}: it has {n} frames")
    return out


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 25,
                codec: str = "libx264rgb", lossless: bool = True) -> None:
    """Write uint8 RGB frames ``[H,W,3]`` (even H, W) to ``path``; ``lossless`` keeps pixels exact."""
    if not len(frames):
        raise ValueError("write_video: no frames")
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb24" if codec == "libx264rgb" else "yuv420p"
        if lossless and codec.startswith("libx264"):
            stream.options = {"qp": "0", "preset": "ultrafast"}
        for f in frames:
            f = np.ascontiguousarray(f, dtype=np.uint8)
            if f.shape != (h, w, 3):
                raise ValueError(f"write_video: all frames must be [{h},{w},3], got {f.shape}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
