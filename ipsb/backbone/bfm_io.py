"""Reading Deep3DFaceRecon's ``BFM_model_front.mat`` into tensors, with a tensor-file cache.

The ``.mat`` (MAT v5, written by Deep3DFaceRecon's ``transferBFM09``) is read with
``scipy.io.loadmat``; the arrays are converted once to float32 / int64 tensors with 0-based indices
and cached next to the file as ``<name>.ipsb.pt`` (keyed by the file's size and mtime), because the
real file is ~200 MB of MATLAB arrays and ``loadmat`` takes seconds.

Returned dict (N vertices, F triangles, K = 68 keypoints):

* ``mean_shape [3N]`` float32, x0,y0,z0,x1,... in decimetres (not recentred here);
* ``id_base [3N,80]``, ``exp_base [3N,64]`` float32 (rows interleaved like ``mean_shape``);
* ``mean_tex [3N]`` in 0..255, ``tex_base [3N,80]`` float32;
* ``faces [F,3]`` int64, 0-based vertex ids;
* ``point_buf [N,8]`` int64, 0-based ids of the faces around each vertex, pad = F;
* ``keypoints [K]`` int64, 0-based vertex ids of the 68 landmarks;
* optional (training masks): ``front_mask [M]`` int64 vertex ids, ``tri_mask [T,3]`` int64 positions
  inside ``front_mask``, ``skin_mask [N]`` float32 0/1.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ipsb.checkpoints import CorruptCheckpointError, load_mat_file

#: Keys the face model needs; a file without any of them is refused.
REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "point_buf", "keypoints")
#: Keys Deep3DFaceRecon reads only for training (photometric-loss region, skin mask).
OPTIONAL_KEYS = ("frontmask2_idx", "tri_mask2", "skinmask")
CACHE_SUFFIX = ".ipsb.pt"
_CACHE_VERSION = 1


def _convert(raw: dict, path: Path) -> dict[str, torch.Tensor]:
    """Raw loadmat arrays -> the documented tensor dict (0-based indices), validating shapes."""
    import numpy as np

    def f32(k):
        return torch.from_numpy(np.asarray(raw[k], dtype=np.float32).copy())

    def idx(k):
        a = np.asarray(raw[k])
        return torch.from_numpy(np.rint(a.astype(np.float64)).astype(np.int64)) - 1

    out = {
        "mean_shape": f32("meanshape").reshape(-1),
        "id_base": f32("idBase"),
        "exp_base": f32("exBase"),
        "mean_tex": f32("meantex").reshape(-1),
        "tex_base": f32("texBase"),
        "faces": idx("tri"),
        "point_buf": idx("point_buf"),
        "keypoints": idx("keypoints").reshape(-1),
    }
    if all(k in raw for k in OPTIONAL_KEYS):
        out["front_mask"] = idx("frontmask2_idx").reshape(-1)
        out["tri_mask"] = idx("tri_mask2")
        out["skin_mask"] = f32("skinmask").reshape(-1)
    n3 = out["mean_shape"].numel()
    problems = []
    if n3 % 3:
        problems.append(f"meanshape has {n3} entries, not a multiple of 3")
    n = n3 // 3
    for k, name in (("id_base", "idBase"), ("exp_base", "exBase"), ("tex_base", "texBase")):
        if out[k].dim() != 2 or out[k].shape[0] != n3:
            problems.append(f"{name} has shape {list(out[k].shape)}, expected [{n3}, K]")
    if out["mean_tex"].numel() != n3:
        problems.append(f"meantex has {out['mean_tex'].numel()} entries, expected {n3}")
    f = out["faces"]
    if f.dim() != 2 or f.shape[1] != 3 or f.min() < 0 or f.max() >= n:
        problems.append(f"tri must be [F,3] 1-based vertex ids in 1..{n}")
    pb = out["point_buf"]
    if pb.dim() != 2 or pb.shape[0] != n or pb.min() < 0 or pb.max() > f.shape[0]:
        problems.append(f"point_buf must be [{n}, k] 1-based face ids padded with F+1")
    kp = out["keypoints"]
    if kp.min() < 0 or kp.max() >= n:
        problems.append(f"keypoints must be 1-based vertex ids in 1..{n}")
    if problems:
        raise CorruptCheckpointError(
            f"'{path}' is not a valid BFM_model_front.mat: " + "; ".join(problems)
            + ". See checkpoints/README.md.")
    return out


def read_bfm_mat(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``BFM_model_front.mat`` (no cache). Missing keys -> CorruptCheckpointError naming them."""
    path = Path(path)
    raw = load_mat_file(path, "the BFM model", "See checkpoints/README.md for how to build BFM_model_front.mat.")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        present = sorted(k for k in raw if not k.startswith("__"))
        raise CorruptCheckpointError(
            f"BFM model '{path}' lacks the keys {missing} (present: {present}); expected the "
            f"Deep3DFaceRecon BFM_model_front.mat with keys {list(REQUIRED_KEYS + OPTIONAL_KEYS)}. "
            f"See checkpoints/README.md.")
    return _convert(raw, path)


def load_bfm(path: str | os.PathLike, cache: bool = True) -> dict[str, torch.Tensor]:
    """Like :func:`read_bfm_mat`, but reads/writes the ``<path>.ipsb.pt`` tensor cache.

    The cache is used when its recorded size and mtime match the ``.mat``; an unwritable folder
    only costs a warning.
    """
    path = Path(path)
    st = path.stat()
    stamp = [_CACHE_VERSION, st.st_size, st.st_mtime_ns]
    cache_path = path.with_name(path.name + CACHE_SUFFIX)
    if cache and cache_path.is_file():
        try:
            blob = torch.load(cache_path, map_location="cpu", weights_only=True)
            if blob.get("stamp") == stamp:
                return blob["tensors"]
        except Exception:  # a stale or damaged cache is simply rebuilt
            pass
    tensors = read_bfm_mat(path)
    if cache:
        try:
            torch.save({"stamp": stamp, "tensors": tensors}, cache_path)
        except OSError as e:
            warnings.warn(f"could not write the BFM cache '{cache_path}': {e}")
    return tensors
