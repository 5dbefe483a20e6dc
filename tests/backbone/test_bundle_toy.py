"""FaceBackbone built from the toy config: frozen, provenance (files + hashes), config errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ipsb.backbone.bundle import COMPONENTS, FaceBackbone, load_config
from ipsb.backbone.toy.networks import ASSETS
from ipsb.checkpoints import MissingCheckpointError, sha256_file

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs" / "backbone"


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return FaceBackbone.from_config(CONFIGS / "toy.yaml")


def test_toy_bundle_is_frozen_and_stays_eval(toy):
    assert all(not p.requires_grad for p in toy.parameters())
    toy.train()
    assert not toy.training and all(not m.training for m in toy.modules())
    parent = torch.nn.Module()
    parent.backbone = toy
    parent.train()
    assert not toy.training


def test_toy_bundle_helpers(toy):
    w = toy.sample_wplus(2, seed=1)
    img = toy.synthesize(w)
    assert img.shape == (2, 3, 64, 64)
    assert toy.coeffs(img).shape == (2, 30)
    emb = toy.embed(img)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    out = toy.render_coeffs(toy.generator.coefficients(w))
    assert out.image.shape == (2, 3, 64, 64) and out.mask.shape == (2, 1, 64, 64)
    assert toy.face_mask(img).shape == (2, 1, 64, 64)
    assert toy.lpips(img, img).abs().max() < 1e-6 and (toy.lpips(img, img.flip(0)) > 0).all()
    assert toy.encode(img).shape == (2, 10, 32)                  # the toy W+ encoder
    bare = FaceBackbone(**{name: getattr(toy, name) for name in COMPONENTS if name != "encoder"})
    with pytest.raises(ValueError, match="'encoder'"):
        bare.encode(img)


def test_toy_bundle_checkpoint_files_and_hashes(toy):
    files = toy.checkpoint_files()
    assert set(files) == {"regressor", "identity", "masker", "encoder"}
    assert all(Path(p).parent == ASSETS for p in files.values())
    hashes = toy.file_hashes()
    assert hashes == {Path(p).name: sha256_file(p) for p in files.values()}
    toy.check_hashes(hashes)
    with pytest.raises(ValueError, match="regressor.pt"):
        toy.check_hashes({**hashes, "regressor.pt": "0" * 64})
    with pytest.raises(ValueError, match="other.pt"):
        toy.check_hashes({"other.pt": "0" * 64})


def test_toy_bundle_config_is_kept_and_rebuilds(toy):
    cfg = toy.config
    assert cfg["class_path"] == "ipsb.backbone.bundle.FaceBackbone"
    again = FaceBackbone.from_config(cfg)
    w = toy.sample_wplus(1, seed=4)
    assert torch.equal(again.synthesize(w), toy.synthesize(w))
    init_only = FaceBackbone.from_config(cfg["init_args"])           # the short form
    assert init_only.config == cfg


def test_toy_bundle_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone components"):
        load_config({"generator": {"class_path": "ipsb.backbone.toy.ToyGenerator"}, "bogus": 1})
    with pytest.raises(ValueError, match="cannot import"):
        FaceBackbone.from_config({"class_path": "ipsb.backbone.bundle.FaceBackbone",
                                  "init_args": {"generator": {"class_path": "ipsb.nothing.Here"}}})
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    from ipsb.backbone.toy.networks import ToyRegressor
    from ipsb.checkpoints import CorruptCheckpointError
    with pytest.raises(CorruptCheckpointError, match="bad.pt"):
        ToyRegressor(weights=str(bad))
    with pytest.raises(MissingCheckpointError, match="nope.pt"):
        ToyRegressor(weights=str(tmp_path / "nope.pt"))


def test_toy_vs_ffhq1024_config_fails_only_on_missing_files(monkeypatch, tmp_path):
    """Same keys in both configs; the real one fails with MissingCheckpointError naming every file."""
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    toy_cfg, real_cfg = load_config(CONFIGS / "toy.yaml"), load_config(CONFIGS / "ffhq1024.yaml")
    assert set(toy_cfg["init_args"]) <= set(real_cfg["init_args"])
    with pytest.raises(MissingCheckpointError) as err:
        FaceBackbone.from_config(CONFIGS / "ffhq1024.yaml")
    msg = str(err.value)
    for name in ("stylegan2-ffhq-config-f.pt", "e4e_ffhq_encode.pt", "BFM_model_front.mat", "epoch_20.pth",
                 "model_ir_se50.pth", "79999_iter.pth", "hopenet_robust_alpha1.pkl", "alexnet-owt-7be5be79.pth"):
        assert name in msg
