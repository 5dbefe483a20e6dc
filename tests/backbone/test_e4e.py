"""e4e Encoder4Editing: manifest, parity with omertov/encoder4editing, loader and bad input.

Fixtures: tests/fixtures/e4e (README there). Tolerance from that README:
``max|out - ref| <= 1e-5 * max|ref|`` per tensor.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.det_weights import det_state_dict, manifest

import ipsb.backbone.encoder as encoder_mod
from ipsb.backbone.encoder import Encoder4Editing, load_e4e, load_e4e_decoder
from ipsb.checkpoints import CorruptCheckpointError

FIX = Path(__file__).resolve().parents[1] / "fixtures"
REL_TOL = 1e-5


def assert_close_rel(out, ref, name):
    assert out.shape == ref.shape, name
    err = (out - ref).abs().max().item()
    assert err <= REL_TOL * ref.abs().max().item(), f"{name}: max err {err:.3g} vs max|ref| {ref.abs().max():.3g}"


def test_parity_e4e_manifest_and_checkpoint_layout():
    ref = json.loads((FIX / "e4e" / "manifest_1024.json").read_text())
    with torch.device("meta"):
        enc = Encoder4Editing(stylegan_size=1024)
    assert enc.num_ws == 18
    assert manifest(enc.state_dict()) == ref and list(enc.state_dict()) == list(ref)
    assert sum(p.numel() for p in enc.parameters()) == 267136704
    # the whole checkpoint: encoder.* is ours, decoder.* is the rosinality 1024 generator
    ckpt = json.loads((FIX / "e4e" / "ckpt_state_dict_manifest_1024.json").read_text())
    ros = json.loads((FIX / "stylegan2_rosinality" / "manifest_1024.json").read_text())
    assert {k[8:]: v for k, v in ckpt.items() if k.startswith("encoder.")} == ref
    assert {k[8:]: v for k, v in ckpt.items() if k.startswith("decoder.")} == ros


def e4e_input() -> torch.Tensor:
    """The fixture input ``x`` (dropped from the trimmed fixture file), from its seed."""
    return torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def e4e_parity():
    """The fixture's encoder: det weights ("fan_in") on every entry (267M parameters, ~10 s)."""
    ref = torch.load(FIX / "e4e" / "parity_256.pt", weights_only=True)
    with torch.device("meta"):
        enc = Encoder4Editing(stylegan_size=1024)
    template = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in enc.state_dict().items()}
    enc.load_state_dict(det_state_dict(template, "fan_in"), strict=True, assign=True)
    enc.set_latent_avg(ref["latent_avg"])
    return enc.eval(), ref


def test_parity_e4e_256_outputs(e4e_parity):
    enc, ref = e4e_parity
    with torch.no_grad():
        final = enc.encode(e4e_input())  # one forward (about 1 s unloaded): codes + latent_avg
    assert_close_rel(final, ref["codes_final"], "codes_final")
    assert_close_rel(final - ref["latent_avg"], ref["codes"], "codes")
    assert (ref["codes"] - ref["codes"][:, :1]).abs().amax(dim=(0, 2))[1:].min() > 0.2  # deltas active


def test_parity_e4e_progressive_stage0(e4e_parity):
    enc, ref = e4e_parity
    enc.progressive_stage = 0
    try:
        with torch.no_grad():
            out = enc(e4e_input())
    finally:
        enc.progressive_stage = enc.num_ws
    assert_close_rel(out, ref["codes_stage0"], "codes_stage0")
    assert torch.equal(out, out[:, :1].expand_as(out))


def test_encode_rejects_wrong_image_shape_and_missing_latent_avg():
    with torch.device("meta"):
        enc = Encoder4Editing(stylegan_size=1024)
    with pytest.raises(ValueError, match=r"\[B,3,256,256\]"):
        enc(torch.zeros(1, 3, 128, 128, device="meta"))
    with pytest.raises(ValueError, match="latent_avg"):
        enc.encode(torch.zeros(1, 3, 256, 256, device="meta"))
    with pytest.raises(ValueError, match=r"\[18,512\]"):
        enc.set_latent_avg(torch.zeros(17, 512))


def _meta_checkpoint():
    with torch.device("meta"):
        enc = Encoder4Editing(stylegan_size=1024)
    ros = json.loads((FIX / "stylegan2_rosinality" / "manifest_1024.json").read_text())
    sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"decoder.{k}": torch.empty(s, device="meta") for k, (s, _) in ros.items()})
    return {"state_dict": sd, "opts": {"stylegan_size": 1024, "encoder_type": "Encoder4Editing"},
            "latent_avg": torch.arange(512.0).repeat(18, 1)}


def test_load_e4e_official_layout(tmp_path, monkeypatch):
    # The real file is 1.1 GB; the loader's own logic (prefixes, strictness, latent_avg) is tested on
    # an in-memory checkpoint of meta tensors with the official keys and shapes.
    path = tmp_path / "e4e_ffhq_encode.pt"
    path.write_bytes(b"stand-in")
    monkeypatch.setattr(encoder_mod, "load_torch_file", lambda p, what: _meta_checkpoint())
    enc = load_e4e(path)
    assert enc.num_ws == 18 and not enc.training
    assert torch.equal(enc.latent_avg, torch.arange(512.0).repeat(18, 1))
    g = load_e4e_decoder(path)
    assert (g.resolution, g.num_ws) == (1024, 18)
    assert g.mean_latent().shape == (1, 512)  # meta tensors: values are not checkable here


def test_load_e4e_bad_files(tmp_path, monkeypatch):
    gen = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "latent_avg": torch.zeros(512)}, gen)
    with pytest.raises(CorruptCheckpointError, match="StyleGAN2 generator checkpoint.*not an e4e"):
        load_e4e(gen)
    other = tmp_path / "other.pt"
    torch.save({"net": {}}, other)
    with pytest.raises(CorruptCheckpointError, match="expected a dict with 'state_dict'"):
        load_e4e(other)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(gen.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_e4e(cut)
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"x")
    ck = _meta_checkpoint()
    ck["state_dict"]["encoder.latlayer1.weight"] = torch.empty(512, 128, 1, 1, device="meta")
    monkeypatch.setattr(encoder_mod, "load_torch_file", lambda p, what: ck)
    with pytest.raises(CorruptCheckpointError, match="latlayer1.weight"):
        load_e4e(wrong)


def _small_checkpoint(with_latent_avg: bool) -> dict:
    """A real (not meta) e4e-layout checkpoint for a 16 px, w_dim 32 decoder: 6 styles.

    ``num_batches_tracked`` entries are dropped (old checkpoints lack them) and ``opts`` is a plain
    dict, as in the official file.
    """
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    torch.manual_seed(3)
    enc = Encoder4Editing(stylegan_size=16, w_dim=32)
    dec = StyleGAN2Generator(16, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    sd = {f"encoder.{k}": v for k, v in enc.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    ckpt = {"state_dict": sd, "opts": {"stylegan_size": 16, "start_from_latent_avg": True}}
    if with_latent_avg:
        ckpt["latent_avg"] = torch.randn(32)
    return ckpt


def test_load_e4e_real_file_is_strict_frozen_and_keeps_values(tmp_path):
    ckpt = _small_checkpoint(with_latent_avg=True)
    path = tmp_path / "e4e_small.pt"
    torch.save(ckpt, path)
    enc = load_e4e(path)
    assert (enc.num_ws, enc.w_dim) == (6, 32)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    for k, v in enc.state_dict().items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == 0
        else:
            assert torch.equal(v, ckpt["state_dict"][f"encoder.{k}"]), k
    assert torch.equal(enc.latent_avg, ckpt["latent_avg"].repeat(6, 1))  # [512]-style -> per row


def test_load_e4e_without_latent_avg_uses_the_decoder_mean(tmp_path, monkeypatch):
    from ipsb.backbone.stylegan2 import generator_from_state_dict

    ckpt = _small_checkpoint(with_latent_avg=False)
    path = tmp_path / "e4e_small.pt"
    path.write_bytes(b"stand-in")
    monkeypatch.setattr(encoder_mod, "load_torch_file", lambda p, what: ckpt)
    torch.manual_seed(7)
    with pytest.warns(UserWarning, match="no latent_avg"):
        enc = load_e4e(path)
    dec = generator_from_state_dict({k[8:]: v for k, v in ckpt["state_dict"].items() if k.startswith("decoder.")})
    torch.manual_seed(7)
    with torch.no_grad():
        expected = dec.mean_latent(10000)  # [1,32], e4e's fallback, same seed
    assert enc.latent_avg.shape == (6, 32)
    torch.testing.assert_close(enc.latent_avg, expected.expand(6, -1), rtol=0, atol=1e-6)
    # and without start_from_latent_avg there is nothing to add: encode() says so
    ckpt["opts"]["start_from_latent_avg"] = False
    with pytest.warns(UserWarning, match="encode\\(\\) needs one"):
        enc = load_e4e(path)
    with pytest.raises(ValueError, match="latent_avg"):
        enc.encode(torch.zeros(1, 3, 256, 256))
