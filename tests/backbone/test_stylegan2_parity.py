"""Parity with rosinality/stylegan2-pytorch: official manifests load strictly; 64-px outputs match.

Fixtures: tests/fixtures/stylegan2_rosinality (README there). Tolerance from that README:
``max|out - ref| <= 1e-5 * max|ref|`` per tensor (float64 vs float32 reference differ by 1.3e-6).
"""
from __future__ import annotations

import json

import pytest
import torch
from helpers.det_weights import det_state_dict, manifest

from ipsb.backbone.stylegan2 import StyleGAN2Generator, generator_from_state_dict

REL_TOL = 1e-5


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, name: str):
    assert out.shape == ref.shape, name
    err = (out - ref).abs().max().item()
    assert err <= REL_TOL * ref.abs().max().item(), f"{name}: max err {err:.3g} vs max|ref| {ref.abs().max():.3g}"


@pytest.mark.parametrize("size,n_entries,params", [(1024, 171, 30370060), (256, 135, 30034338)])
def test_parity_stylegan2_rosinality_manifest_loads_strictly(fixtures_dir, size, n_entries, params):
    ref = json.loads((fixtures_dir / "stylegan2_rosinality" / f"manifest_{size}.json").read_text())
    assert len(ref) == n_entries
    with torch.device("meta"):
        g = StyleGAN2Generator(size, channel_multiplier=2)
    assert manifest(g.state_dict()) == ref and list(g.state_dict()) == list(ref)  # same order too
    assert sum(p.numel() for p in g.parameters()) == params
    # an official-layout state dict (meta tensors of the manifest's shapes) loads strictly and
    # the size / multiplier are inferred from the shapes alone
    state = {k: torch.empty(shape, device="meta") for k, (shape, _) in ref.items()}
    loaded = generator_from_state_dict(state)
    assert (loaded.resolution, loaded.num_ws, loaded.config["channel_multiplier"]) == (size, 2 * size.bit_length() - 4, 2)


@pytest.fixture(scope="module")
def rosinality_64(request):
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "fixtures" / "stylegan2_rosinality" / "parity_64.pt"
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("variant", ["_keepfir", ""])
def test_parity_stylegan2_rosinality_64_outputs(rosinality_64, variant):
    ref = rosinality_64
    assert ref["config"] == {"size": 64, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 1}
    g = StyleGAN2Generator(64, channel_multiplier=1).eval()
    keep = (lambda k: k.endswith(".kernel")) if variant else (lambda k: False)
    g.load_state_dict(det_state_dict(g.state_dict(), "unit", keep=keep), strict=True)
    with torch.no_grad():
        w = g.mapping(ref["z"])
        assert_close_rel(w, ref["w" + variant], "w")
        assert_close_rel(g.synthesis(ref["wplus"], noise_mode="const"), ref["image" + variant], "image")
        assert_close_rel(g.synthesis(w[:, None].expand(-1, 10, -1)), ref["image_from_z" + variant], "image_from_z")
        assert_close_rel(g(ref["z"], truncation_psi=0.7, truncation_latent=ref["w_mean"]),
                         ref["image_trunc" + variant], "image_trunc")
