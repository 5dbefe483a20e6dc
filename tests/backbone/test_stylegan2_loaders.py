"""load_rosinality: registry names, inferred config, latent_avg, and clear errors for bad files."""
from __future__ import annotations

import pytest
import torch

from ipsb.backbone.stylegan2 import StyleGAN2Generator, load_rosinality
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError


def tiny_state(resolution=32):
    torch.manual_seed(1)
    return StyleGAN2Generator(resolution, w_dim=32, n_mlp=3, channel_base=1024, channel_max=32).eval()


def test_load_rosinality_by_registry_name(tmp_path, monkeypatch):
    g = tiny_state()
    avg = torch.randn(32)
    torch.save({"g_ema": g.state_dict(), "latent_avg": avg}, tmp_path / "stylegan2-ffhq-config-f.pt")
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    loaded = load_rosinality("stylegan2-ffhq-config-f.pt")
    assert (loaded.resolution, loaded.w_dim, loaded.n_mlp) == (32, 32, 3)
    assert loaded.channels == g.channels
    assert torch.equal(loaded.mean_latent(), avg[None])
    w = torch.randn(2, loaded.num_ws, 32)
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(w), g.synthesis(w))


def test_missing_checkpoint_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingCheckpointError, match="stylegan2-ffhq-config-f.pt"):
        load_rosinality("stylegan2-ffhq-config-f.pt")


def test_truncated_file_is_a_clear_error(tmp_path):
    g = tiny_state()
    path = tmp_path / "g.pt"
    torch.save({"g_ema": g.state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_rosinality(path)


def test_e4e_checkpoint_given_as_generator(tmp_path):
    g = tiny_state()
    sd = {f"decoder.{k}": v for k, v in g.state_dict().items()}
    sd["encoder.input_layer.0.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": sd, "latent_avg": torch.zeros(18, 512), "opts": {}}, path)
    with pytest.raises(CorruptCheckpointError, match=r"'g_ema'.*e4e"):
        load_rosinality(path)


def test_g_ema_that_is_not_a_generator(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"g_ema": {"foo.weight": torch.zeros(3)}}, path)
    with pytest.raises(CorruptCheckpointError, match="not a rosinality StyleGAN2 generator"):
        load_rosinality(path)


def test_g_ema_with_a_wrong_shape(tmp_path):
    sd = tiny_state().state_dict()
    sd["conv1.noise.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": sd}, path)
    with pytest.raises(CorruptCheckpointError, match="conv1.noise.weight"):
        load_rosinality(path)
