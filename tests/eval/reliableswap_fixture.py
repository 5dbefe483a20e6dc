"""The ``ffpp_reliableswap`` fixture as ipsb inputs: frames, the reference's 5 points as a landmarks
file, a stand-in ``similarity_Lm3D_all.mat``, and a tiny FF++ tree made of the frames.

Items ``i = 0..39``: target video ``t = i // 10``, frame ``f = i % 10``; source image
``source_{TS[t]}_0``; swap ``swap_{t}_{f}``. In the FF++ tree, target video ``t`` is ``00t`` and
source video ``k`` is ``00(4+k)``, so the pair files ``00t_00(4+TS[t])`` sort in item order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ipsb.data.align import image_to_tensor
from ipsb.data.deep3d_align import image_key, write_landmarks_file
from ipsb.data.ffpp_index import manipulated_dir, original_dir
from ipsb.data.video import write_video

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ffpp_reliableswap"
TS = (2, 0, 3, 1)
ROLES = ("t", "s", "r")


def reference() -> dict:
    return torch.load(FIX / "reference.pt")


def frame_name(role: str, item: int) -> str:
    t, f = divmod(item, 10)
    return {"t": f"target_{t}_{f}", "s": f"source_{TS[t]}_0", "r": f"swap_{t}_{f}"}[role] + ".png"


def png(name: str) -> np.ndarray:
    return np.array(Image.open(FIX / "frames" / name).convert("RGB"))


def frame_tensor(role: str, item: int) -> torch.Tensor:
    """``[3,256,256]`` in [-1,1], as the FF++ DataModule gives it."""
    return image_to_tensor(png(frame_name(role, item)))


def stored_points(ref: dict, role: str, item: int) -> np.ndarray:
    """The reference's 5 points (x right, y down) in their own dtype: MTCNN's float32, or the float64
    fallback."""
    pts = ref[f"lm5_{role}"][item].numpy()
    return pts if bool(ref[f"mtcnn_fallback_{role}"][item]) else pts.astype(np.float32)


def write_reference_points(ref: dict, path: Path) -> Path:
    """A landmarks file holding the reference's points for every fixture frame (keyed by its pixels)."""
    points = {image_key(png(frame_name(role, i))): stored_points(ref, role, i) for role in ROLES for i in range(40)}
    return write_landmarks_file(path, points)


def write_lm3d_standin(ref: dict, folder: Path) -> Path:
    """``similarity_Lm3D_all.mat`` stand-in: a 68x3 ``lm`` whose 5-point reduction is the stored
    ``lm3d_std`` (both corners of each eye hold the eye's point; unused rows are zero)."""
    import scipy.io

    lm3d = ref["lm3d_std"].numpy()
    lm = np.zeros((68, 3))
    lm[[36, 39]], lm[[42, 45]], lm[30], lm[48], lm[54] = lm3d[0], lm3d[1], lm3d[2], lm3d[3], lm3d[4]
    path = Path(folder) / "similarity_Lm3D_all.mat"
    scipy.io.savemat(str(path), {"lm": lm})
    return path


def build_tree(root: Path, targets=range(4), frames=range(10), method: str = "FaceShifter") -> Path:
    """FF++ layout (c23) of the fixture frames: lossless videos, so decoding gives the PNG pixels."""
    orig, man = root / original_dir("c23"), root / manipulated_dir(method, "c23")
    orig.mkdir(parents=True, exist_ok=True)
    man.mkdir(parents=True, exist_ok=True)
    for t in targets:
        s = TS[t]
        write_video(orig / f"{t:03d}.mp4", [png(f"target_{t}_{f}.png") for f in frames])
        write_video(orig / f"{4 + s:03d}.mp4", [png(f"source_{s}_0.png")])
        write_video(man / f"{t:03d}_{4 + s:03d}.mp4", [png(f"swap_{t}_{f}.png") for f in frames])
    return root
