"""FaceForensics++ evaluation list: pairs, frame selection and the frozen manifest (docs/evaluation.md, section 1).

Tree (the official download layout)::

    <root>/original_sequences/youtube/<comp>/videos/TTT.mp4
    <root>/manipulated_sequences/<Method>/<comp>/videos/TTT_SSS.mp4   (target TTT, source SSS)

* pairs: one per manipulated file name of ``method`` (FaceShifter by default: the 1,000 pairs);
* frames: ``frames_per_video`` slots per video at uniform stride ``ceil(len / frames_per_video)``,
  slot k starting at ``k * stride``; when the aligner finds no face in a frame the slot moves to the
  next frame, up to the next slot's start (skipped frames are counted; a slot without any face is
  dropped and counted);
* source image for target slot k: ``source_frame="first"`` -> frame 0 of the source video (or the
  first frame with a face; ReliableSwap's evaluation code), ``"same"`` -> frame N of the source for
  target frame N (or the next one with a face; MegaFS' description); an item without one is dropped;
* gallery (for ID retrieval): the selected slot frames of every source video.

:func:`build_ffpp_manifest` freezes all this into a :class:`~ipsb.data.manifest.Manifest` with the
sha256 of every video used (originals and the method's manipulated files).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Optional

from ipsb.checkpoints import sha256_file
from ipsb.data.align import NoFaceError
from ipsb.data.manifest import Manifest
from ipsb.data.video import count_frames, iter_frames

PAIR_NAME = re.compile(r"^(?P<target>[^_]+)_(?P<source>[^_]+)\.mp4$")
SOURCE_FRAME_MODES = ("first", "same")


def original_dir(compression: str) -> str:
    return f"original_sequences/youtube/{compression}/videos"


def manipulated_dir(method: str, compression: str) -> str:
    return f"manipulated_sequences/{method}/{compression}/videos"


def list_pairs(root: str | os.PathLike, method: str, compression: str = "c23") -> list[tuple[str, str]]:
    """(target, source) ids from the manipulated file names, sorted; ValueError if the folder is missing/empty."""
    folder = Path(root) / manipulated_dir(method, compression)
    if not folder.is_dir():
        raise ValueError(f"FF++: no folder '{folder}' (expected manipulated videos TTT_SSS.mp4 of {method})")
    pairs = []
    for p in sorted(folder.glob("*.mp4")):
        m = PAIR_NAME.match(p.name)
        if m is None:
            raise ValueError(f"FF++: manipulated file '{p}' is not named TARGET_SOURCE.mp4")
        pairs.append((m["target"], m["source"]))
    if not pairs:
        raise ValueError(f"FF++: no .mp4 files in '{folder}'")
    return pairs


def describe_aligner(aligner) -> str:
    """A run-independent description (class + simple settings), stored in the manifest config."""
    if type(aligner).__repr__ is not object.__repr__:
        return repr(aligner)
    simple = {k: v for k, v in sorted(vars(aligner).items())
              if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
    return f"{type(aligner).__module__}.{type(aligner).__qualname__}({simple})"


def slot_starts(num_frames: int, frames_per_video: int = 10) -> list[int]:
    """Start frame of each slot: ``k * ceil(len / n)`` for k < n while < len."""
    if num_frames <= 0:
        return []
    stride = math.ceil(num_frames / frames_per_video)
    return [k * stride for k in range(frames_per_video) if k * stride < num_frames]


def first_faces(path: Path, windows: list[tuple[int, int]], aligner) -> tuple[list[Optional[int]], list[int]]:
    """For each ``[start, stop)`` window, the first frame where ``aligner`` finds a face (or None).

    Decodes the video once; each frame is aligned at most once. Returns (results, frames without a face).
    """
    results: list[Optional[int]] = [None] * len(windows)
    if not windows:
        return results, []
    verdict: dict[int, bool] = {}
    stop = max(b for _, b in windows)
    for i, frame in iter_frames(path, stop=stop):
        active = [w for w, (a, b) in enumerate(windows) if results[w] is None and a <= i < b]
        if not active:
            if all(r is not None or b <= i for r, (_, b) in zip(results, windows)):
                break
            continue
        if i not in verdict:
            try:
                aligner.align(frame, name=f"{path} frame {i}")
                verdict[i] = True
            except NoFaceError:
                verdict[i] = False
        if verdict[i]:
            for w in active:
                results[w] = i
    return results, sorted(i for i, ok in verdict.items() if not ok)


def build_ffpp_manifest(root: str | os.PathLike, aligner, method: str = "FaceShifter", compression: str = "c23",
                        frames_per_video: int = 10, source_frame: str = "first",
                        limit_pairs: Optional[int] = None) -> Manifest:
    """Scan the tree, select frames with ``aligner`` and return the manifest (see module docstring)."""
    if source_frame not in SOURCE_FRAME_MODES:
        raise ValueError(f"source_frame must be one of {SOURCE_FRAME_MODES}, got {source_frame!r}")
    root = Path(root)
    pairs = list_pairs(root, method, compression)[:limit_pairs]
    videos = sorted({v for p in pairs for v in p})
    rel = {v: f"{original_dir(compression)}/{v}.mp4" for v in videos}
    for v in videos:
        if not (root / rel[v]).is_file():
            raise ValueError(f"FF++: original video '{root / rel[v]}' (used by the {method} pairs) is missing")
    lengths = {v: count_frames(root / rel[v]) for v in videos}
    starts = {v: slot_starts(lengths[v], frames_per_video) for v in videos}
    # windows per video: its slots, then the source-frame searches it serves
    sources = sorted({src for _, src in pairs})
    windows: dict[str, list[tuple[int, int]]] = {}
    for v in videos:
        s = starts[v]
        windows[v] = [(a, s[k + 1] if k + 1 < len(s) else lengths[v]) for k, a in enumerate(s)]
        if source_frame == "first" and v in sources:
            windows[v].append((0, lengths[v]))  # its result is found[v][-1]
    found: dict[str, list[Optional[int]]] = {}
    no_face: dict[str, list[int]] = {}
    slot_frames: dict[str, list[int]] = {}
    for v in videos:
        found[v], no_face[v] = first_faces(root / rel[v], windows[v], aligner)
        slot_frames[v] = [f for f in found[v][:len(starts[v])] if f is not None]
    same_cache: dict[tuple[str, int], Optional[int]] = {}
    if source_frame == "same":
        # target frames are known only now; search [N, len) in each source once per distinct N
        need: dict[str, set[int]] = {}
        for tgt, src in pairs:
            for n in slot_frames[tgt]:
                if n < lengths[src]:
                    need.setdefault(src, set()).add(n)
        for src, ns in need.items():
            ns_sorted = sorted(ns)
            res, nf = first_faces(root / rel[src], [(n, lengths[src]) for n in ns_sorted], aligner)
            no_face[src] = sorted(set(no_face[src]) | set(nf))
            same_cache.update({(src, n): r for n, r in zip(ns_sorted, res)})
    items, dropped_items = [], 0
    for tgt, src in pairs:
        for k, n in enumerate(slot_frames[tgt]):
            s = found[src][-1] if source_frame == "first" else same_cache.get((src, n))
            if s is None:
                dropped_items += 1
                continue
            items.append({"sample_index": len(items), "target": tgt, "source": src, "slot": k,
                          "target_frame": n, "source_frame": s})
    gallery = [{"sample_index": i, "video": v, "frame": f}
               for i, (v, f) in enumerate((v, f) for v in sources for f in slot_frames[v])]
    files = {rel[v]: {"sha256": sha256_file(root / rel[v]), "num_frames": lengths[v]} for v in videos}
    for tgt, src in pairs:
        p = f"{manipulated_dir(method, compression)}/{tgt}_{src}.mp4"
        files[p] = {"sha256": sha256_file(root / p)}
    data = {
        "videos": {v: {"path": rel[v], "num_frames": lengths[v], "slot_starts": starts[v],
                       "frames": slot_frames[v], "no_face_frames": no_face[v]} for v in videos},
        "pairs": [{"target": t, "source": s, "swap_video": f"{manipulated_dir(method, compression)}/{t}_{s}.mp4"}
                  for t, s in pairs],
        "items": items,
        "gallery": gallery,
        "counts": {"pairs": len(pairs), "videos": len(videos), "items": len(items), "gallery": len(gallery),
                   "no_face_frames": sum(len(x) for x in no_face.values()),
                   "dropped_slots": sum(len(starts[v]) - len(slot_frames[v]) for v in videos),
                   "dropped_items": dropped_items},
    }
    config = {"method": method, "compression": compression, "frames_per_video": frames_per_video,
              "source_frame": source_frame, "limit_pairs": limit_pairs, "aligner": describe_aligner(aligner)}
    return Manifest(kind="ffpp", config=config, files=files, data=data)
