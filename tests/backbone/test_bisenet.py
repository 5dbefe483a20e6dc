"""BiSeNet face parser: strict manifest load at full size, logits and argmax parity, preprocessing vs
PIL, face/hair/background masks, no download at construction, bad input."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from conftest import FIXTURES
from helpers.det_weights import manifest
from helpers.manifest_state import read_manifest, state_from_manifest
from ipsb.backbone.interfaces import FaceMasker
from ipsb.backbone.parsing import FACE_CLASSES, LABELS, BiSeNet, class_masks, load_bisenet
from ipsb.checkpoints import CorruptCheckpointError

DIR = FIXTURES / "face_parsing"
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def ref():
    data = torch.load(DIR / "parity.pt")
    # the slimmed fixture's network input, bitwise as ToTensor + Normalize built it
    data["input"] = (data["resized_uint8_hwc"].permute(2, 0, 1)[None].float() / 255 - MEAN) / STD
    return data


@pytest.fixture(scope="module")
def bisenet():
    return load_bisenet(state_from_manifest(read_manifest(DIR / "manifest.json")))


@pytest.fixture(scope="module")
def outputs(bisenet, ref):
    with torch.no_grad():
        return bisenet.network_logits(ref["input"])


def test_parity_bisenet_manifest_strict_and_logits(bisenet, ref, outputs):
    assert manifest(bisenet.state_dict()) == read_manifest(DIR / "manifest.json")
    assert isinstance(bisenet, FaceMasker) and not bisenet.training
    assert list(LABELS) == ref["labels"]
    out, out16, out32 = outputs
    assert out.shape == (1, 19, 512, 512)
    assert_close(out[:, :, ::16, ::16], ref["logits_sub16"], rtol=1e-4, atol=1e-4)
    assert_close(out[:, :, ::16, ::16], ref["logits_sub16_float64_ref"], rtol=1e-4, atol=1e-4)
    assert_close(out16[:, :, ::16, ::16], ref["logits16_sub16"], rtol=1e-4, atol=1e-4)
    assert_close(out32[:, :, ::16, ::16], ref["logits32_sub16"], rtol=1e-4, atol=1e-4)
    stats = ref["logit_stats"]
    assert abs(float(out.mean()) - stats["out"]["mean"]) < 1e-4
    assert_close(out[0, :, 256, 256], stats["out_center_pixel"].float(), rtol=1e-4, atol=1e-4)


def test_parity_bisenet_argmax_maps(outputs, ref):
    out = outputs[0][0]
    plain = out.argmax(0)
    centered = (out - out.mean((1, 2), keepdim=True)).argmax(0)
    ok = ~ref["argmax_fragile_mask"]
    assert torch.equal(plain[ok], ref["argmax_uint8"].long()[ok])
    ok_c = ~ref["argmax_centered_fragile_mask"]
    assert torch.equal(centered[ok_c], ref["argmax_centered_uint8"].long()[ok_c])
    assert len(centered.unique()) == 19  # the diagnostic map has real structure


def test_parity_bisenet_preprocess_and_logits_at_input_size(bisenet, ref, outputs):
    """Our antialiased resize of the 600x560 source vs PIL's: <= 1.5/255 max, <= 0.5/255 mean."""
    src = ref["src_uint8_hwc"].permute(2, 0, 1)[None].float() / 255 * 2 - 1
    diff01 = (bisenet.preprocess(src) - ref["input"]).abs() * STD
    assert float(diff01.max()) <= 1.5 / 255 and float(diff01.mean()) <= 0.5 / 255
    image512 = ref["resized_uint8_hwc"].permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        logits = bisenet.logits(image512)
    assert_close(logits, outputs[0], rtol=1e-5, atol=1e-5)
    small = torch.nn.functional.interpolate(image512, size=(128, 128), mode="area")
    with torch.no_grad():
        masks = bisenet.masks(small)
        face = bisenet(small)
    assert face.shape == (1, 1, 128, 128) and float(face.min()) >= 0 and float(face.max()) <= 1
    assert torch.equal(face, masks["face"])
    total = masks["face"] + masks["hair"] + masks["background"] + masks["other"]
    assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)


def test_class_masks_groups_classes():
    logits = torch.full((1, 19, 4, 4), -10.0)
    logits[:, 17, :2] = 10.0  # hair on top
    logits[:, 1, 2:, :2] = 10.0  # skin bottom-left
    logits[:, 0, 2:, 2:] = 10.0  # background bottom-right
    soft = class_masks(logits)
    hard = class_masks(logits, hard=True)
    assert_close(soft["hair"][0, 0, :2], torch.ones(2, 4), rtol=0, atol=1e-6)
    assert_close(soft["face"][0, 0, 2:, :2], torch.ones(2, 2), rtol=0, atol=1e-6)
    assert_close(soft["background"][0, 0, 2:, 2:], torch.ones(2, 2), rtol=0, atol=1e-6)
    assert float(soft["face"][0, 0, :2].max()) < 1e-6
    for m in hard.values():
        assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard["face"] + hard["hair"] + hard["background"] + hard["other"], torch.ones(1, 1, 4, 4))
    # ears count as face only when asked
    ears = torch.full((1, 19, 1, 1), -10.0)
    ears[:, 7] = 10.0
    assert float(class_masks(ears)["face"]) < 1e-6
    assert float(class_masks(ears, face_classes=FACE_CLASSES + (7, 8))["face"]) > 0.99


def test_construction_downloads_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("BiSeNet construction tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    model = BiSeNet()
    assert sum(p.numel() for p in model.parameters()) > 13_000_000


def test_bisenet_bad_input_and_wrong_checkpoint(bisenet, tmp_path):
    with pytest.raises(ValueError, match=r"BiSeNet expects an RGB image tensor"):
        bisenet(torch.zeros(2, 512, 512))
    with pytest.raises(ValueError, match="face_classes"):
        BiSeNet(face_classes=(1, 19))
    path = tmp_path / "79999_iter.pth"
    torch.save({"cp.resnet.conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CorruptCheckpointError, match=r"79999_iter\.pth.*BiSeNet.*missing"):
        load_bisenet(path)
