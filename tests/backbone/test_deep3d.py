"""Deep3D regressor: strict manifest load at full size, output parity, checkpoint formats, torch.func."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from helpers.det_weights import det_state_dict, manifest

from ipsb.backbone.recon import Deep3DRegressor, ReconNet, recon_state_dict
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError

RTOL = ATOL = 1e-4  # fixture README's suggested check


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """ResNet-50 on a shared 2-core machine: one thread is ~10x faster than an oversubscribed pool
    (and is how the reference outputs were made)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def det_state():
    return det_state_dict(ReconNet().state_dict(), "fan_in")


@pytest.fixture(scope="module")
def regressor(det_state):
    reg = Deep3DRegressor()
    reg.net.load_state_dict(det_state, strict=True)
    return reg


@pytest.fixture(scope="module")
def ref(request):
    return torch.load(request.config.rootpath / "tests/fixtures/deep3d/parity_recon.pt")


def test_parity_deep3d_manifest_strict(request, det_state):
    expected = json.loads((request.config.rootpath / "tests/fixtures/deep3d/manifest_recon.json").read_text())
    net = ReconNet()
    assert manifest(net.state_dict()) == expected
    assert len(expected) == 332
    assert sum(p.numel() for p in net.parameters()) == 24_034_625
    result = net.load_state_dict(det_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_parity_deep3d_output(regressor, ref):
    with torch.no_grad():
        raw = regressor.net(ref["input"])  # the network's own convention: [0,1] at 224
        ours = regressor(ref["input"] * 2 - 1)  # ipsb convention: [-1,1]
    torch.testing.assert_close(raw, ref["output"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours, ref["output"], rtol=RTOL, atol=ATOL)
    # the input convention: uint8 / 255, no normalisation, RGB
    torch.testing.assert_close(ref["input_uint8_hwc"].permute(0, 3, 1, 2).double().div(255).float(), ref["input"])
    for name, (a, b) in ref["split_slices"].items():
        torch.testing.assert_close(ours[:, a:b], ref["split"][name], rtol=RTOL, atol=ATOL)


def test_deep3d_checkpoint_file_roundtrip(tmp_path, det_state, regressor, ref):
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": det_state, "opt_00": {"state": {}}, "epoch": 20}, path)
    reg = Deep3DRegressor(path)
    assert reg.checkpoint == path and not reg.training
    assert all(not p.requires_grad for p in reg.parameters())
    loaded = reg.net.state_dict()
    assert all(loaded[k].equal(v) for k, v in det_state.items())


def test_deep3d_state_dict_variants(det_state):
    """module. prefixes (DataParallel) and missing num_batches_tracked are accepted."""
    variant = OrderedDict(("module." + k, v) for k, v in det_state.items() if not k.endswith("num_batches_tracked"))
    out = recon_state_dict({"net_recon": variant})
    assert list(out.keys()) == list(det_state.keys()) or set(out) == set(det_state)
    net = ReconNet()
    net.load_state_dict(out, strict=True)
    assert net.final_layers[6].bias.equal(det_state["final_layers.6.bias"])
    bare = recon_state_dict(det_state)  # a bare state dict also works
    assert set(bare) == set(det_state)


def test_deep3d_bad_checkpoints(tmp_path, det_state):
    wrong = OrderedDict(det_state)
    wrong["final_layers.0.weight"] = torch.zeros(81, 2048, 1, 1)
    del wrong["backbone.layer4.2.bn3.bias"]
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": wrong}, path)
    with pytest.raises(CorruptCheckpointError) as e:
        Deep3DRegressor(path)
    assert "backbone.layer4.2.bn3.bias" in str(e.value) and "final_layers.0.weight" in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptCheckpointError, match="junk.pth"):
        Deep3DRegressor(junk)
    torch.save({"opt_00": {}}, tmp_path / "noweights.pth")
    with pytest.raises(CorruptCheckpointError, match="net_recon"):
        Deep3DRegressor(tmp_path / "noweights.pth")
    with pytest.raises(MissingCheckpointError, match="epoch_20.pth"):
        Deep3DRegressor(tmp_path / "absent" / "epoch_20.pth")


def test_deep3d_preprocess_and_shapes(regressor):
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    pre = Deep3DRegressor.preprocess(x)
    assert pre.shape == (2, 3, 224, 224) and pre.min() >= 0 and pre.max() <= 1
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        regressor(torch.zeros(3, 224, 224))
    regressor.train()
    assert not regressor.training and not regressor.net.backbone.bn1.training


def test_deep3d_torch_func(regressor):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net = regressor.net  # 32 px straight into the network: the resize to 224 would dominate the time
    with torch.no_grad():
        batched = net(x)
        per_sample = torch.func.vmap(lambda im: net(im[None])[0])(x)
    torch.testing.assert_close(per_sample, batched, rtol=1e-4, atol=1e-4)
    jac = torch.func.jacrev(lambda im: net(im[None])[0, 224:227])(x[0])  # angle rows
    xg = x[0].clone().requires_grad_(True)
    out = net(xg[None])[0]
    for k in range(3):
        g, = torch.autograd.grad(out[224 + k], xg, retain_graph=True)
        torch.testing.assert_close(jac[k], g, rtol=1e-4, atol=1e-6)
    assert jac.abs().sum() > 0
