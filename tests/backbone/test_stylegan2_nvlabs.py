"""NVlabs stylegan2-ada-pytorch format: key map, manifest, 64-px parity, and the restricted .pkl reader.

Fixtures: tests/fixtures/stylegan2_ada_nvlabs (README there). Tolerance from that README:
``max|out - ref| <= 1e-5 * max|ref|`` per tensor.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.det_weights import det_state_dict, manifest

from ipsb.backbone.stylegan2 import StyleGAN2Generator
from ipsb.backbone.stylegan2_nvlabs import (from_nvlabs_state_dict, load_nvlabs_pkl, nvlabs_key_to_rosinality,
                                            nvlabs_to_rosinality, read_nvlabs_pkl, rosinality_to_nvlabs)
from ipsb.checkpoints import CorruptCheckpointError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "stylegan2_ada_nvlabs"
REL_TOL = 1e-5
FIR = torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1])[None, :] / 64


def assert_close_rel(out, ref, name):
    assert out.shape == ref.shape, name
    err = (out - ref).abs().max().item()
    assert err <= REL_TOL * ref.abs().max().item(), f"{name}: max err {err:.3g} vs max|ref| {ref.abs().max():.3g}"


@pytest.mark.parametrize("res", ["res_1024", "res_256", "res_64"])
def test_parity_stylegan2_nvlabs_key_rule_matches_verified_key_map(res):
    table = json.loads((FIX / "key_map_nvlabs_to_rosinality.json").read_text())[res]
    for row in table["rows"]:
        assert nvlabs_key_to_rosinality(row["nvlabs"]) == row["rosinality"], row
    for key in table["nvlabs_keys_without_rosinality_counterpart"]:
        assert nvlabs_key_to_rosinality(key) is None, key
    with pytest.raises(ValueError, match="unknown NVlabs"):
        nvlabs_key_to_rosinality("synthesis.b8.conv2.weight")


def test_parity_stylegan2_nvlabs_manifest_1024_loads_strictly():
    ref = json.loads((FIX / "manifest_1024.json").read_text())
    with torch.device("meta"):
        g = StyleGAN2Generator(1024, channel_base=32768, channel_max=512)
    layout = rosinality_to_nvlabs(g.state_dict())
    assert manifest(layout) == ref and list(layout) == list(ref)
    state = {k: torch.empty(shape, device="meta") for k, (shape, _) in ref.items()}
    loaded = from_nvlabs_state_dict(state)
    assert (loaded.resolution, loaded.num_ws) == (1024, 18)
    assert manifest(loaded.state_dict()) == manifest(g.state_dict())


@pytest.fixture(scope="module")
def nvlabs_64():
    return torch.load(FIX / "parity_64.pt", weights_only=True)


def nvlabs_det_state(variant: str) -> "OrderedDict[str, torch.Tensor]":
    """The fixture's weights: the det rule on NVlabs keys (FIR filters kept for ``_keepfir``)."""
    with torch.device("meta"):
        g = StyleGAN2Generator(64, channel_base=16384, channel_max=512)
    template = OrderedDict((k, FIR.clone() if k.endswith("resample_filter") else torch.empty(v.shape))
                           for k, v in rosinality_to_nvlabs(g.state_dict()).items())
    keep = (lambda k: k.endswith(".resample_filter")) if variant else (lambda k: False)
    return det_state_dict(template, "unit", keep=keep)


@pytest.mark.parametrize("variant,conv_clamp", [("_keepfir", None), ("", 256)])
def test_parity_stylegan2_nvlabs_64_outputs(nvlabs_64, variant, conv_clamp):
    ref = nvlabs_64
    state = nvlabs_det_state(variant)
    assert list(state) == json.loads((FIX / "info.json").read_text())["parity_64"]["state_dict_keys"]
    assert torch.equal(state["mapping.w_avg"], ref["w_avg"])
    g = from_nvlabs_state_dict(state, conv_clamp=conv_clamp)
    with torch.no_grad():
        ws = g.mapping(ref["z"])[:, None].expand(-1, g.num_ws, -1)
        ws_t = g.mapping(ref["z"], truncation_psi=0.7)[:, None].expand(-1, g.num_ws, -1)  # towards w_avg
        outs = {"ws_from_z": ws, "ws_from_z_trunc": ws_t,
                "img": g.synthesis(ref["ws"], noise_mode="const"),
                "img_noise_none": g.synthesis(ref["ws"], noise_mode="none"),
                "img_from_z": g.synthesis(ws), "img_from_z_trunc": g.synthesis(ws_t)}
        if not variant:  # the same weights without conv_clamp (TF-converted pickles)
            outs["img_noclamp"] = from_nvlabs_state_dict(state).synthesis(ref["ws"])
    for name, out in outs.items():
        assert_close_rel(out, ref[name + variant], name + variant)


def test_round_trip_rosinality_nvlabs():
    torch.manual_seed(0)
    g = StyleGAN2Generator(16, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    avg = torch.randn(32)
    nv = rosinality_to_nvlabs(g.state_dict(), avg)
    back, w_avg = nvlabs_to_rosinality(nv)
    assert torch.equal(w_avg, avg)
    assert list(back) == list(g.state_dict()) or set(back) == set(g.state_dict())
    for k, v in g.state_dict().items():
        assert torch.allclose(back[k], v), k


# -- restricted pickle reader ---------------------------------------------------------------------

@pytest.fixture
def fake_nvlabs_modules(monkeypatch):
    """Stand-ins for ``torch_utils.persistence`` and ``dnnlib.util`` so a test can *write* a pickle
    with the same globals NVlabs' pickles reference (reading never needs them)."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called by the reader
        raise AssertionError("the restricted reader must not call pickled functions")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu = types.ModuleType("torch_utils")
    tu.persistence = persistence
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    dn = types.ModuleType("dnnlib")
    dn.util = util
    for name, mod in [("torch_utils", tu), ("torch_utils.persistence", persistence), ("dnnlib", dn),
                      ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return persistence, EasyDict


class _Persistent:
    """Pickles like an NVlabs persistent object: a call to _reconstruct_persistent_obj(meta)."""

    def __init__(self, fn, class_name, state):
        self.fn, self.meta = fn, dict(type="class", version=6, module_src="raise SystemExit('executed!')",
                                      class_name=class_name, state=state)

    def __reduce__(self):
        return self.fn, (self.meta,)


def _tree(fn, flat: dict, buffers=("resample_filter", "noise_const", "w_avg"), extra_nonpersistent=False):
    """Nest a flat NVlabs state dict into persistent-object records like training/networks.py's."""
    def build(prefix_items, name):
        params, bufs, children = OrderedDict(), OrderedDict(), OrderedDict()
        groups: "OrderedDict[str, dict]" = OrderedDict()
        for key, t in prefix_items.items():
            head, _, rest = key.partition(".")
            if rest:
                groups.setdefault(head, OrderedDict())[rest] = t
            elif head in buffers:
                bufs[head] = t
            else:
                params[head] = torch.nn.Parameter(t, requires_grad=False)
        for head, items in groups.items():
            children[head] = build(items, head)
        state = {"_parameters": params, "_buffers": bufs, "_modules": children, "training": False,
                 "_non_persistent_buffers_set": set(), "weight_gain": np.float64(0.5)}
        return _Persistent(fn, name, state)

    root = build(flat, "Generator")
    root.meta["state"]["_init_kwargs"] = {"z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 16,
                                          "img_channels": 3,
                                          "synthesis_kwargs": {"channel_base": 256, "conv_clamp": None,
                                                               "architecture": "skip"}}
    if extra_nonpersistent:
        root.meta["state"]["_buffers"]["scratch"] = torch.zeros(2)
        root.meta["state"]["_non_persistent_buffers_set"] = {"scratch"}
    return root


def _write_pkl(path, fake_nvlabs_modules, flat):
    persistence, EasyDict = fake_nvlabs_modules
    fn = persistence._reconstruct_persistent_obj
    data = {"G": _tree(fn, flat), "D": None, "G_ema": _tree(fn, flat, extra_nonpersistent=True),
            "training_set_kwargs": EasyDict(resolution=16, path="ffhq.zip"), "augment_pipe": None}
    with open(path, "wb") as f:
        pickle.dump(data, f)


def test_restricted_pkl_reader_rebuilds_g_ema(tmp_path, fake_nvlabs_modules):
    torch.manual_seed(0)
    g = StyleGAN2Generator(16, w_dim=32, n_mlp=2, channel_base=256, channel_max=16).eval()
    avg = torch.randn(32)
    flat = rosinality_to_nvlabs(g.state_dict(), avg)
    path = tmp_path / "network-snapshot.pkl"
    _write_pkl(path, fake_nvlabs_modules, flat)
    # the code stored in the pickle would raise SystemExit if it ran; it must not
    state, kwargs = read_nvlabs_pkl(path)
    assert list(state) == list(flat) and all(torch.equal(state[k], flat[k]) for k in flat)
    assert kwargs["img_resolution"] == 16
    loaded = load_nvlabs_pkl(path)
    assert torch.equal(loaded.mean_latent(), avg[None])
    w = torch.randn(1, loaded.num_ws, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.synthesis(w), g.synthesis(w), atol=1e-6)


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned > /dev/null",)


def test_restricted_pkl_reader_refuses_code(tmp_path, monkeypatch):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil()}))
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(CorruptCheckpointError, match=r"refusing.*system"):
        read_nvlabs_pkl(path)
    assert not called


def test_pkl_of_the_wrong_kind_and_truncated(tmp_path, fake_nvlabs_modules):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": torch.zeros(2)}))
    with pytest.raises(CorruptCheckpointError, match="expected a dict with 'G_ema'"):
        load_nvlabs_pkl(path)
    # a torch.save zip file (e.g. a rosinality .pt) is not a network pickle either
    pt = tmp_path / "g.pt"
    torch.save({"g_ema": {}}, pt)
    with pytest.raises(CorruptCheckpointError):
        load_nvlabs_pkl(pt)
    # truncated
    torch.manual_seed(0)
    g = StyleGAN2Generator(16, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    full = tmp_path / "full.pkl"
    _write_pkl(full, fake_nvlabs_modules, rosinality_to_nvlabs(g.state_dict()))
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_nvlabs_pkl(cut)


def test_tensorflow_pickle_is_refused_with_a_hint(tmp_path, monkeypatch):
    mod = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return Network, ()

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    mod.Network = Network
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, mod)
    path = tmp_path / "tf.pkl"
    path.write_bytes(pickle.dumps((Network(), Network(), Network())))
    with pytest.raises(CorruptCheckpointError, match="TensorFlow"):
        load_nvlabs_pkl(path)
