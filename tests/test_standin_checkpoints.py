"""The stand-in official checkpoints (tests/helpers/standin_checkpoints.py) load through ipsb's loaders.

The backbone config written next to them builds a FaceBackbone (every loader is strict), and so does
the shipped ``backbone/ffhq1024.yaml`` with ``$IPSB_CHECKPOINTS`` pointing at them; the backbone
records the sha256 of every file it read (what stage checkpoints store), and a stored hash that
differs is refused by file name.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers.standin_checkpoints import (ALEXNET, E4E, GENERATOR, HOPENET, LM3D, SPHERE20, SPHERE20_112X96,
                                         SHIPPED_BACKBONE)
from ipsb.backbone.bundle import FaceBackbone
from ipsb.checkpoints import sha256_file

BACKBONE_FILES = {"stylegan2-ffhq-config-f.pt", "e4e_ffhq_encode.pt", "BFM_model_front.mat", "epoch_20.pth",
                  "model_ir_se50.pth", "79999_iter.pth", "hopenet_robust_alpha1.pkl", "alexnet-owt-7be5be79.pth"}


def test_backbone_yaml_has_the_shape_of_the_shipped_one(standin_checkpoints):
    ours = yaml.safe_load(standin_checkpoints.backbone_yaml.read_text())
    shipped = yaml.safe_load(SHIPPED_BACKBONE.read_text())
    assert ours["class_path"] == shipped["class_path"]
    assert list(ours["init_args"]) == list(shipped["init_args"])
    for name, spec in shipped["init_args"].items():
        assert ours["init_args"][name]["class_path"] == spec["class_path"], name


def test_standin_backbone_builds_and_records_file_hashes(standin_checkpoints, standin_backbone):
    bb, s = standin_backbone, standin_checkpoints
    hashes = bb.file_hashes()
    assert set(hashes) == BACKBONE_FILES
    for name, digest in hashes.items():
        assert digest == sha256_file(s.files[name]), name
    assert bb.generator.resolution == s.resolution and bb.generator.num_ws == s.num_ws == bb.encoder.num_ws
    assert bb.generator.w_dim == s.w_dim == bb.encoder.w_dim
    torch.testing.assert_close(bb.encoder.latent_avg[0], bb.generator.mean_latent()[0])
    with torch.no_grad():
        image = bb.synthesize(bb.sample_wplus(1, seed=0))
    assert image.shape == (1, 3, s.resolution, s.resolution) and torch.isfinite(image).all()
    bb.check_hashes(hashes)
    changed = {**hashes, HOPENET: "0" * 64}
    with pytest.raises(ValueError, match=HOPENET):
        bb.check_hashes(changed)


def test_shipped_ffhq1024_config_builds_from_the_standin_folder(standin_checkpoints, standin_backbone, monkeypatch,
                                                                 tmp_path):
    """The official names of the shipped config resolve in $IPSB_CHECKPOINTS, LPIPS' AlexNet file included."""
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(standin_checkpoints.folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bb = FaceBackbone.from_config(SHIPPED_BACKBONE)
    assert bb.file_hashes() == standin_backbone.file_hashes()


def test_official_layouts_of_generator_and_e4e(standin_checkpoints):
    """rosinality: ``g_ema`` + ``latent_avg``; e4e: ``state_dict`` (``encoder.*`` and, as ``decoder.*``,
    the generator it was trained against), ``opts``, ``latent_avg [num_ws, w_dim]``."""
    gen = torch.load(standin_checkpoints.files[GENERATOR], weights_only=True, mmap=True)
    e4e = torch.load(standin_checkpoints.files[E4E], weights_only=True, mmap=True)
    assert set(gen) == {"g_ema", "latent_avg"} and set(e4e) == {"state_dict", "opts", "latent_avg"}
    assert e4e["opts"]["stylegan_size"] == standin_checkpoints.resolution
    assert e4e["latent_avg"].shape == (standin_checkpoints.num_ws, standin_checkpoints.w_dim)
    assert torch.equal(e4e["latent_avg"][-1], gen["latent_avg"])
    decoder = {k[len("decoder."):]: v for k, v in e4e["state_dict"].items() if k.startswith("decoder.")}
    assert list(decoder) == list(gen["g_ema"])
    assert all(torch.equal(decoder[k], v) for k, v in gen["g_ema"].items())


def test_cosface_layouts_and_lm3d(standin_checkpoints):
    from ipsb.backbone.identity_sphere import SphereFace, load_sphere20
    from ipsb.backbone.state_loading import load_checkpoint_into
    from ipsb.data.deep3d_align import load_lm3d

    official = torch.load(standin_checkpoints.files[SPHERE20], weights_only=True)
    other = torch.load(standin_checkpoints.files[SPHERE20_112X96], weights_only=True)
    assert official["fc.weight"].shape == (512, 512 * 7 * 7) and other["fc.weight"].shape == (512, 512 * 7 * 6)
    assert list(official) == list(other)
    load_checkpoint_into(SphereFace(input_size=(112, 112)), standin_checkpoints.files[SPHERE20], "sphere20")
    load_sphere20(standin_checkpoints.files[SPHERE20_112X96])
    assert load_lm3d(standin_checkpoints.files[LM3D]).shape == (5, 3)
    assert ALEXNET in standin_checkpoints.files


def test_metric_networks_config_builds_from_the_standins(standin_checkpoints, monkeypatch):
    """The FF++ metric networks of the shipped eval config load the stand-ins strictly, CosFace's
    112x112 layout (the one the official file has) included."""
    from ipsb.eval.networks import MetricNetworks

    monkeypatch.setenv("IPSB_CHECKPOINTS", str(standin_checkpoints.folder))
    nets = MetricNetworks.from_config(standin_checkpoints.metric_networks_yaml)
    loaded = {Path(f).name for files in nets.checkpoint_files().values() for f in files}
    assert {SPHERE20, "epoch_20.pth", HOPENET} <= loaded
    assert nets.identity.input_size == (112, 112)


def test_standin_folder_is_cheap_enough(standin_checkpoints):
    """Written once per session: a guard against the helper growing (measured ~4 s, ~730 MB)."""
    assert sum(standin_checkpoints.sizes.values()) < 900 * 2**20
    assert standin_checkpoints.seconds < 60
