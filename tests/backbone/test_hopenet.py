"""HopeNet: strict manifest load at full size, logits/degrees parity, preprocessing vs the
reference's PIL pipeline, the bins->degrees rule, old-snapshot loading and bad input."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from conftest import FIXTURES
from helpers.det_weights import manifest
from helpers.manifest_state import read_manifest, state_from_manifest
from ipsb.backbone.interfaces import PoseEstimator
from ipsb.backbone.pose import HopeNet, bins_to_degrees, load_hopenet, resize_shorter_center_crop
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError

DIR = FIXTURES / "hopenet"


@pytest.fixture(scope="module")
def hopenet():
    state = state_from_manifest(read_manifest(DIR / "manifest.json"))
    return load_hopenet(state), state


@pytest.fixture(scope="module")
def ref():
    return torch.load(DIR / "parity.pt")


def _src(u8_hwc: torch.Tensor) -> torch.Tensor:
    return u8_hwc.permute(2, 0, 1)[None].float() / 255 * 2 - 1


def test_parity_hopenet_manifest_strict_and_logits(hopenet, ref):
    model, _ = hopenet
    assert manifest(model.state_dict()) == read_manifest(DIR / "manifest.json")
    assert isinstance(model, HopeNet) and isinstance(model, PoseEstimator) and not model.training
    with torch.no_grad():
        yaw, pitch, roll = model.network_logits(ref["input"])
    for name, got in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        assert_close(got, ref[f"{name}_logits"], rtol=1e-4, atol=1e-4)
        assert_close(got, ref["logits_float64_ref"][name], rtol=1e-4, atol=1e-4)
        assert_close(bins_to_degrees(got), ref[f"{name}_deg"], rtol=0, atol=1e-3)


def test_parity_hopenet_full_pipeline_from_raw_crops(hopenet, ref):
    """Raw RGB crops (260x240, 250x250) through our resize/crop/normalise and the network.

    Our antialiased bilinear resize differs from PIL's by at most ~1 grey level, so the stated
    tolerances are 1.5/255 (max) and 0.5/255 (mean) on the [0,1] image and 0.05 degrees.
    """
    model, _ = hopenet
    std = model.std
    srcs = [_src(s) for s in ref["src_uint8_hwc"]]
    x = torch.cat([model.preprocess(s) for s in srcs])
    diff01 = (x - ref["input"]).abs() * std
    assert float(diff01.max()) <= 1.5 / 255 and float(diff01.mean()) <= 0.5 / 255
    with torch.no_grad():
        logits = torch.cat([model.logits(s) for s in srcs])
        deg0 = model(srcs[0])
    deg = bins_to_degrees(logits)
    assert deg0.shape == (1, 3) and logits.shape == (2, 3, 66)
    expected = torch.stack([ref["yaw_deg"], ref["pitch_deg"], ref["roll_deg"]], 1)
    assert_close(deg, expected, rtol=0, atol=0.05)
    assert_close(deg0, deg[:1], rtol=0, atol=1e-5)


def test_parity_hopenet_old_snapshot_without_bn_counters(hopenet, ref):
    model, state = hopenet
    old = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    loaded = load_hopenet(old)
    with torch.no_grad():
        assert torch.equal(torch.stack(loaded.network_logits(ref["input"][:1]), 1),
                           torch.stack(model.network_logits(ref["input"][:1]), 1))
    broken = dict(old)
    del broken["module.fc_roll.weight"]
    with pytest.raises(CorruptCheckpointError, match=r"HopeNet.*missing.*fc_roll\.weight"):
        load_hopenet(broken)


def test_legacy_pickle_format_is_read(tmp_path):
    """Pre-1.6 (non-zip) torch.save files, like the 2017 snapshot, are read with weights_only."""
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save({"fc_yaw.weight": torch.zeros(66, 2048)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CorruptCheckpointError, match=r"326 entries.*272 missing \(e.g. conv1.weight") as err:
        load_hopenet(path)
    assert "could not read" not in str(err.value)


def test_bins_to_degrees_rule():
    logits = torch.full((4, 66), -50.0)
    bins = torch.tensor([0, 33, 40, 65])
    logits[torch.arange(4), bins] = 50.0
    assert_close(bins_to_degrees(logits), bins.float() * 3 - 99, rtol=0, atol=1e-4)
    assert_close(bins_to_degrees(torch.zeros(2, 66)), torch.full((2,), 32.5 * 3 - 99), rtol=0, atol=1e-4)
    # two equal peaks at bins 10 and 20 -> their mean, 15 * 3 - 99
    two = torch.full((1, 66), -50.0)
    two[0, [10, 20]] = 50.0
    assert_close(bins_to_degrees(two), torch.tensor([-54.0]), rtol=0, atol=1e-4)


def test_resize_shorter_center_crop_geometry():
    # a horizontal ramp in a wide image: the centre crop keeps the centre columns
    wide = torch.linspace(0, 1, 448).view(1, 1, 1, 448).expand(1, 1, 224, 448)
    out = resize_shorter_center_crop(wide, 224)
    assert out.shape == (1, 1, 224, 224)
    assert abs(float(out.mean()) - 0.5) < 1e-3 and float(out[..., 0].mean()) > 0.24
    square = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert torch.equal(resize_shorter_center_crop(square), square)
    tall = torch.rand(1, 3, 300, 250, generator=torch.Generator().manual_seed(0))
    assert resize_shorter_center_crop(tall).shape == (1, 3, 224, 224)


def test_hopenet_bad_input_and_missing_file(hopenet, tmp_path, monkeypatch):
    model, _ = hopenet
    with pytest.raises(ValueError, match=r"HopeNet expects an RGB image tensor \[B,3,H,W\]"):
        model(torch.zeros(1, 4, 224, 224))
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingCheckpointError, match=r"hopenet_robust_alpha1\.pkl"):
        load_hopenet()
    bad = tmp_path / "hopenet_robust_alpha1.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(CorruptCheckpointError, match="hopenet_robust_alpha1.pkl"):
        load_hopenet()
