"""The FF++ metric networks' input variants: sphere20 112x112 / 112x96 from the checkpoint's fc width,
the whole-frame resize crop, HopeNet's reliableswap input, and the Deep3D alignment's point sources."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import FIXTURES
from helpers.det_weights import manifest
from helpers.ffpp_metric_checkpoints import standin_state
from helpers.manifest_state import read_manifest, state_from_manifest
from ipsb.backbone.identity_crop import PSP_BOX_256, SPHERE_BOX_256
from ipsb.backbone.identity_sphere import load_sphere20
from ipsb.backbone.pose import HopeNet, load_hopenet
from ipsb.checkpoints import MissingCheckpointError
from ipsb.data.deep3d_align import (FFHQ_LM5_256, FivePoints, ffhq_fallback_points, image_key, read_landmarks_file,
                                    write_landmarks_file)
from ipsb.eval.deep3d_aligned import AlignedDeep3DRegressor, to_uint8_hwc

MANIFEST_112 = FIXTURES / "ffpp_reliableswap" / "manifest_cosface_sphere20_112x112.json"
MANIFEST_96 = FIXTURES / "arcface" / "manifest_cosface_sphere20.json"


def test_sphere20_official_112x112_file_loads_strictly(tmp_path):
    path = tmp_path / "net_sphere20_data_vggface2_acc_9955.pth"
    torch.save(standin_state("sphere20_112x112"), path)
    net = load_sphere20(path, crop="ffhq", mirror=True)
    assert net.input_size == (112, 112) and net.checkpoint_path == str(path)
    assert manifest(net.state_dict()) == read_manifest(MANIFEST_112)
    assert net.crop.box == PSP_BOX_256 and net.preprocess(torch.zeros(2, 3, 256, 256)).shape == (2, 3, 112, 112)
    assert net(torch.zeros(2, 3, 256, 256)).shape == (2, 1024)
    # the 112x96 layout still loads, with its own box
    small = load_sphere20(state_from_manifest(read_manifest(MANIFEST_96)))
    assert small.input_size == (112, 96) and small.crop.box == SPHERE_BOX_256
    assert manifest(small.state_dict()) == read_manifest(MANIFEST_96)


def test_sphere20_resize_crop_is_the_whole_frame_align_corners():
    net = load_sphere20(standin_state("sphere20_112x112"), crop="resize", mirror=False)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    want = F.interpolate(x, size=112, mode="bilinear", align_corners=True)
    assert torch.equal(net.preprocess(x), want)
    assert net(x).shape == (2, 512)
    with pytest.raises(ValueError, match="crop must be one of"):
        load_sphere20(standin_state("sphere20_112x112"), crop="box")


def test_hopenet_reliableswap_input_is_imagenet_normalised_minus_one_one():
    net = HopeNet(preprocessing="reliableswap")
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.equal(net.preprocess(x), (x - mean) / std)
    assert HopeNet().preprocess(x).shape == (1, 3, 224, 224)
    assert load_hopenet(standin_state("hopenet"), preprocessing="reliableswap").preprocessing == "reliableswap"
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        HopeNet(preprocessing="raw")


def test_to_uint8_truncates_or_rounds():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.2]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint8_hwc(x, "truncate")[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]
    assert to_uint8_hwc(x, "round")[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 255]
    with pytest.raises(ValueError, match="to_uint8"):
        to_uint8_hwc(x, "floor")


def test_landmarks_file_round_trip_and_point_sources(tmp_path):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    pa = np.arange(10, dtype=np.float32).reshape(5, 2)
    path = write_landmarks_file(tmp_path / "pts.json", {image_key(a): pa, image_key(b): FFHQ_LM5_256})
    table = read_landmarks_file(path)
    assert table[image_key(a)].dtype == np.float32 and np.array_equal(table[image_key(a)], pa)
    assert table[image_key(b)].dtype == np.float64
    pts = FivePoints(detector=None, landmarks_file=path)
    assert pts(a)[1] == "file" and pts(a, points=pa + 1)[1] == "given"
    c = np.zeros((64, 48, 3), np.uint8)
    got, source = pts(c)
    assert source == "fallback" and np.allclose(got, FFHQ_LM5_256 * [48 / 256, 64 / 256])
    assert np.array_equal(ffhq_fallback_points(256, 256), FFHQ_LM5_256)
    assert image_key(a) != image_key(a[::-1].copy())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other", "images": {}}))
    with pytest.raises(ValueError, match="bad.json.*format"):
        FivePoints(landmarks_file=bad)
    with pytest.raises(ValueError, match=r"\[5,2\]"):
        write_landmarks_file(tmp_path / "x.json", {"k": np.zeros((4, 2), np.float32)})


def test_dlib_five_points_on_a_fixture_frame():
    from PIL import Image

    rgb = np.array(Image.open(FIXTURES / "ffpp_reliableswap" / "frames" / "target_0_0.png").convert("RGB"))
    ref = torch.load(FIXTURES / "ffpp_reliableswap" / "reference.pt")["lm5_t"][0].numpy()
    pts, source = FivePoints(detector="dlib")(rgb)
    assert source == "dlib" and pts.dtype == np.float32
    assert np.linalg.norm(pts - ref, axis=1).max() < 8.0        # dlib vs the reference's MTCNN points (px)


def test_aligned_regressor_names_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingCheckpointError) as e:
        AlignedDeep3DRegressor(detector=None)
    assert "epoch_20.pth" in str(e.value) and "similarity_Lm3D_all.mat" in str(e.value)
    torch.save({"net_recon": standin_state("recon")}, tmp_path / "epoch_20.pth")
    with pytest.raises(ValueError, match=r"lm3d must be the 5-point 3D template \[5,3\]"):
        AlignedDeep3DRegressor(lm3d=np.zeros((4, 3)), detector=None)
