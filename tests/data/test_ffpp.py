"""FF++ list building on a tiny test-made tree of lossless 32x32 mp4 files.

Pixel code of every frame: R = 10 * frame index, G = 40 * video number (manipulated: 200),
B = 255 marks "no face" (the injected aligner raises NoFaceError there).
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ipsb.data import ffpp as ffpp_module
from ipsb.data.ffpp import FFPPDataModule
from ipsb.data.ffpp_index import build_ffpp_manifest, slot_starts
from ipsb.data.manifest import Manifest
from ipsb.data.simple_aligners import CenterCropAligner
from ipsb.data.video import write_video

LENGTHS = {"000": 23, "001": 23, "002": 17}
NO_FACE = {"000": {3}, "001": {0, 1}, "002": {16}}
PAIRS = ["000_001", "001_002", "002_000"]


def frames_of(video: str, n: int, manipulated: bool = False):
    out = []
    for i in range(n):
        f = np.zeros((32, 32, 3), np.uint8)
        f[..., 0] = 10 * i
        f[..., 1] = 200 if manipulated else 40 * int(video)
        if not manipulated and i in NO_FACE[video]:
            f[..., 2] = 255
        out.append(f)
    return out


def make_tree(root):
    orig = root / "original_sequences/youtube/c23/videos"
    man = root / "manipulated_sequences/FaceShifter/c23/videos"
    orig.mkdir(parents=True)
    man.mkdir(parents=True)
    for v, n in LENGTHS.items():
        write_video(orig / f"{v}.mp4", frames_of(v, n))
    for p in PAIRS:
        write_video(man / f"{p}.mp4", frames_of(p[:3], LENGTHS[p[:3]], manipulated=True))
    return root


def aligner():
    return CenterCropAligner(output_size=32, has_face=lambda rgb: rgb[0, 0, 2] < 128)


def decode(img):
    """aligned [3,32,32] in [-1,1] -> (frame index, G code, B code) from the centre pixel."""
    px = ((img[:, 16, 16] + 1) * 127.5).round().long().tolist()
    return px[0] // 10, px[1], px[2]


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "ffpp")


def test_slot_starts():
    assert slot_starts(23) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert slot_starts(17) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert slot_starts(100) == list(range(0, 100, 10))
    assert slot_starts(5) == [0, 1, 2, 3, 4]


def test_manifest_selects_expected_frames_and_pairs(tree):
    m = build_ffpp_manifest(tree, aligner())
    v = m.data["videos"]
    assert v["000"]["frames"] == [0, 4, 6, 9, 12, 15, 18, 21]        # frame 3 has no face -> 4
    assert v["001"]["frames"] == [2, 3, 6, 9, 12, 15, 18, 21]        # frames 0, 1 -> 2
    assert v["002"]["frames"] == [0, 2, 4, 6, 8, 10, 12, 14]         # slot at 16 has no face: dropped
    assert [(p["target"], p["source"]) for p in m.data["pairs"]] == [("000", "001"), ("001", "002"), ("002", "000")]
    items = m.data["items"]
    assert [it["sample_index"] for it in items] == list(range(24))
    by_pair = {}
    for it in items:
        by_pair.setdefault((it["target"], it["source"]), []).append((it["target_frame"], it["source_frame"]))
    assert by_pair[("000", "001")] == [(f, 2) for f in v["000"]["frames"]]   # source: first frame with a face
    assert by_pair[("001", "002")] == [(f, 0) for f in v["001"]["frames"]]
    assert by_pair[("002", "000")] == [(f, 0) for f in v["002"]["frames"]]
    assert [(g["video"], g["frame"]) for g in m.data["gallery"]] == \
        [(s, f) for s in ("000", "001", "002") for f in v[s]["frames"]]
    assert m.data["counts"] == {"pairs": 3, "videos": 3, "items": 24, "gallery": 24, "no_face_frames": 4,
                                "dropped_slots": 1, "dropped_items": 0}
    assert len(m.files) == 6 and all(len(f["sha256"]) == 64 for f in m.files.values())


def test_same_frame_source_mode(tree):
    m = build_ffpp_manifest(tree, aligner(), source_frame="same")
    got = [(it["target_frame"], it["source_frame"]) for it in m.data["items"] if it["target"] == "000"]
    assert got == [(0, 2), (4, 4), (6, 6), (9, 9), (12, 12), (15, 15), (18, 18), (21, 21)]
    got = [(it["target_frame"], it["source_frame"]) for it in m.data["items"] if it["target"] == "002"]
    assert got == [(f, f) for f in [0, 2, 4, 6, 8, 10, 12, 14]]
    with pytest.raises(ValueError, match="source_frame"):
        build_ffpp_manifest(tree, aligner(), source_frame="middle")


def test_items_images_and_swaps(tree, tmp_path):
    dm = FFPPDataModule(str(tree), aligner=aligner(), image_size=32, swaps="manipulated", batch_size=5)
    ds = dm.pairs_dataset()
    it = ds[1]   # pair 000_001, slot 1
    assert (it["target_name"], it["source_name"], it["target_frame"], it["source_frame"]) == ("000", "001", 4, 2)
    assert decode(it["target"]) == (4, 0, 0) and decode(it["source"]) == (2, 40, 0)
    assert decode(it["swap"]) == (4, 200, 0) and it["swap_aligned"]
    assert it["target"].shape == (3, 32, 32) and it["target"].min() >= -1 and it["target"].max() <= 1
    assert (it["target_id"], it["source_id"]) == (0, 1)
    pairs_loader, gallery_loader = dm.test_dataloader()
    batch = next(iter(pairs_loader))
    assert batch["sample_index"].tolist() == [0, 1, 2, 3, 4] and batch["target"].shape == (5, 3, 32, 32)
    g = dm.gallery_dataset()[9]
    assert (g["video_name"], g["frame"], g["video_id"]) == ("001", 3, 1) and decode(g["image"])[:2] == (3, 40)
    assert len(next(iter(gallery_loader))["image"]) == 5
    # a folder of precomputed swaps: <out>/TTT_SSS/frame_NNNN.png
    out = tmp_path / "swaps" / "000_001"
    out.mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 77, np.uint8)).save(out / "frame_0004.png")
    ds2 = FFPPDataModule(str(tree), aligner=aligner(), image_size=32, swaps=str(tmp_path / "swaps")).pairs_dataset()
    assert ds2[1]["swap"].shape == (3, 32, 32)
    assert torch.allclose(ds2[1]["swap"], torch.full((3, 32, 32), 77 / 127.5 - 1), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="frame_0000.png"):
        ds2[0]


def test_manifest_roundtrip_and_change_detection(tree, tmp_path, monkeypatch):
    path = tmp_path / "ffpp_manifest.json"
    dm = FFPPDataModule(str(tree), aligner=aligner(), image_size=32, manifest_path=str(path))
    dm.prepare_data()
    dm.setup("test")
    first = json.loads(path.read_text())
    assert first["list_sha256"] == dm.manifest.list_sha256

    def no_rebuild(*a, **k):
        raise AssertionError("manifest rebuilt although it exists")

    monkeypatch.setattr(ffpp_module, "build_ffpp_manifest", no_rebuild)
    dm2 = FFPPDataModule(str(tree), aligner=aligner(), image_size=32, manifest_path=str(path))
    dm2.prepare_data()
    dm2.setup("test")
    assert dm2.manifest.data == dm.manifest.data and dm2.manifest.list_sha256 == first["list_sha256"]
    # a rebuilt manifest of the same tree hashes the same (two runs are comparable)
    assert build_ffpp_manifest(tree, aligner()).list_sha256 == first["list_sha256"]
    with pytest.raises(ValueError, match="other settings"):
        FFPPDataModule(str(tree), aligner=aligner(), image_size=32, manifest_path=str(path),
                       source_frame="same").setup("test")
    # edited manifest -> refused
    edited = dict(first)
    edited["data"] = dict(first["data"], items=first["data"]["items"][:-1])
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="modified"):
        Manifest.load(bad)
    # a changed video -> refused, by name
    write_video(tree / "original_sequences/youtube/c23/videos/002.mp4", frames_of("001", 17))
    with pytest.raises(ValueError, match="002.mp4"):
        FFPPDataModule(str(tree), aligner=aligner(), image_size=32, manifest_path=str(path)).setup("test")


def test_bad_trees(tmp_path):
    with pytest.raises(ValueError, match="manipulated_sequences/FaceShifter"):
        build_ffpp_manifest(tmp_path, aligner())
    man = tmp_path / "manipulated_sequences/FaceShifter/c23/videos"
    man.mkdir(parents=True)
    (man / "000_001.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="000.mp4"):
        build_ffpp_manifest(tmp_path, aligner())
    (man / "weird.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="TARGET_SOURCE"):
        build_ffpp_manifest(tmp_path, aligner())


def test_video_frames_exact_and_errors(tmp_path):
    from ipsb.data.video import count_frames, read_frames

    path = tmp_path / "v.mp4"
    write_video(path, frames_of("001", 23))
    assert count_frames(path) == 23
    got = read_frames(path, [22, 0, 5])
    assert sorted(got) == [0, 5, 22] and all(np.array_equal(got[i], frames_of("001", 23)[i]) for i in got)
    with pytest.raises(ValueError, match="no frame 23: it has 23 frames"):
        read_frames(path, [23])
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.mp4"):
        count_frames(tmp_path / "junk.mp4")
