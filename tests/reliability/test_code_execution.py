"""No file can run code: ``class_path`` payloads in checkpoints and configs, and malicious pickles,
through every way ipsb reads them. Each payload would create a marker file; it must never appear.

* ``load_from_checkpoint`` of each of the four stages;
* ``ipsb fit``, ``validate`` and ``test`` with ``--ckpt_path`` (LightningCLI merges the checkpoint's
  hyper-parameters into the config);
* ``ipsb swap`` with a payload in each stage checkpoint;
* a backbone config naming ``os.system`` as each component;
* every backbone loader (and the basis, W+, FID and NVlabs readers) given a pickle that runs a command.
"""
from __future__ import annotations

import pickle
from argparse import ArgumentError

import pytest
import torch
import yaml

from helpers.hostile import (CONFIGS, TOY, assert_refused, evil_pickle, payload, snapshot, tampered)
from ipsb.checkpoints import UnexpectedContentError, UnsafeCheckpointError, load_stage_checkpoint
from ipsb.config_objects import ConfigBuildError
from ipsb.stages.basis_module import BasisModule
from ipsb.stages.blend_module import BlendModule
from ipsb.stages.detail_module import DetailModule
from ipsb.stages.mapping_module import MappingModule

STAGES = {"basis": BasisModule, "mapping": MappingModule, "detail": DetailModule, "blend": BlendModule}


def _evil_ckpt(path, class_path: str, **hparams):
    """A checkpoint that loads fine weights-only, with hyper-parameters carrying code."""
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": class_path, **hparams}}, path)
    return path


# ---------------------------------------------------------------------------------------------- stages
@pytest.mark.parametrize("stage", list(STAGES))
def test_load_from_checkpoint_of_every_stage_never_runs_a_payload(stage, world, tmp_path):
    cls, marker = STAGES[stage], tmp_path / "MARKER"
    record = torch.load(world[stage], map_location="cpu", weights_only=True)["hyper_parameters"]["backbone"]
    nested = {**record, "init_args": {**record["init_args"], "generator": payload(marker)}}
    path = tampered(world[stage], tmp_path / f"{stage}_evil.ckpt", backbone=nested)
    with pytest.raises((ConfigBuildError, ArgumentError), match="os.system"):
        cls.load_from_checkpoint(path)
    with pytest.raises(UnexpectedContentError) as err:
        load_stage_checkpoint(path, cls)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- --ckpt_path
MAPPING = "ipsb.stages.mapping_module.MappingModule"
EVALUATION = "ipsb.eval.evaluator.EvaluationModule"
STAGE_PAYLOADS = {
    "backbone": lambda m: {"backbone": payload(m)},
    "nested-generator": lambda m: {"backbone": {"class_path": "ipsb.backbone.bundle.FaceBackbone",
                                                "init_args": {"generator": payload(m)}}},
    "optimizer": lambda m: {"optimizer": payload(m)},
}
CKPT_PATH_CASES = {
    **{f"{command}-{name}": (command, TOY / "mapping.yaml", MAPPING, hp)
       for command in ("fit", "validate") for name, hp in STAGE_PAYLOADS.items()},
    "test-networks": ("test", CONFIGS / "eval" / "ffpp_toy.yaml", EVALUATION, lambda m: {"networks": payload(m)}),
    "test-nested-network": ("test", CONFIGS / "eval" / "ffpp_toy.yaml", EVALUATION, lambda m: {"networks": {
        "identity": payload(m), "regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}}}),
    "test-methods": ("test", CONFIGS / "eval" / "ffpp_toy.yaml", EVALUATION, lambda m: {"methods": [payload(m)]}),
}


@pytest.mark.parametrize("case", list(CKPT_PATH_CASES))
def test_ckpt_path_hyperparameters_never_run_a_payload(case, tmp_path, ipsb):
    command, config, stage, hparams = CKPT_PATH_CASES[case]
    marker = tmp_path / "MARKER"
    ckpt = _evil_ckpt(tmp_path / "evil.ckpt", stage, **hparams(marker))
    res = ipsb(command, "--config", config, "--ckpt_path", ckpt, *(["--trainer.max_steps", "1"] if command == "fit" else []),
               cwd=tmp_path)
    line = assert_refused(res, command, ckpt, "os.system", marker=marker)
    assert "outside the packages a config may name" in line          # refused by the allowlist, unimported
    assert not (tmp_path / "outputs").exists()                       # refused before anything was built


def test_ckpt_path_naming_another_class_is_refused_unimported(tmp_path, ipsb):
    marker = tmp_path / "MARKER"
    ckpt = _evil_ckpt(tmp_path / "evil.ckpt", "os.system", command=f"touch {marker}")
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--ckpt_path", ckpt, cwd=tmp_path)
    assert_refused(res, "fit", ckpt, "is a system checkpoint", "MappingModule", marker=marker)


# ---------------------------------------------------------------------------------------------- swap
@pytest.mark.parametrize("role", ["mapping", "detail", "blend"])
def test_swap_never_runs_a_payload_in_a_stage_checkpoint(role, world, tmp_path, ipsb, swap_args):
    marker = tmp_path / "MARKER"
    evil = tampered(world[role], tmp_path / f"evil_{role}.ckpt", optimizer=payload(marker))
    out = tmp_path / "out.png"
    res = ipsb(*swap_args(out, **{role: evil}))
    assert_refused(res, "swap", evil, "os.system", marker=marker)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- backbone
COMPONENTS = ("generator", "face_model", "renderer", "regressor", "identity", "perceptual", "encoder", "masker",
              "pose")


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_backbone_config_naming_code_as_any_component_never_runs_it(component, world, tmp_path, ipsb, swap_args):
    marker = tmp_path / "MARKER"
    cfg = yaml.safe_load(world["backbone"].read_text())
    cfg["init_args"][component] = payload(marker)
    evil = tmp_path / "evil_backbone.yaml"
    evil.write_text(yaml.safe_dump(cfg))
    res = ipsb(*swap_args(tmp_path / "out.png", backbone=evil))
    assert_refused(res, "swap", evil, component, "os.system", "outside the packages", marker=marker)


def test_fit_with_a_backbone_config_naming_code_never_runs_it(world, tmp_path, ipsb):
    marker = tmp_path / "MARKER"
    cfg = yaml.safe_load(world["backbone"].read_text())
    cfg["init_args"]["identity"] = payload(marker)
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(cfg))
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--model.init_args.backbone", "evil.yaml", cwd=tmp_path)
    assert_refused(res, "fit", "os.system", "identity", marker=marker)


#: backbone loaders: (component, class_path, file argument, file format)
LOADERS = {
    "rosinality": ("generator", "ipsb.backbone.stylegan2.load_rosinality", "path_or_name", "zip"),
    "nvlabs": ("generator", "ipsb.backbone.stylegan2_nvlabs.load_nvlabs_pkl", "path_or_name", "pickle"),
    "e4e": ("encoder", "ipsb.backbone.encoder.load_e4e", "path_or_name", "zip"),
    "deep3d": ("regressor", "ipsb.backbone.recon.Deep3DRegressor", "checkpoint", "zip"),
    "bfm": ("face_model", "ipsb.backbone.face_model.BFMFaceModel", "path_or_name", "zip"),
    "ir_se50": ("identity", "ipsb.backbone.identity_irse.load_ir_se50", "checkpoint", "zip"),
    "iresnet": ("identity", "ipsb.backbone.identity_iresnet.load_iresnet", "checkpoint", "zip"),
    "sphere20": ("identity", "ipsb.backbone.identity_sphere.load_sphere20", "checkpoint", "zip"),
    "hopenet": ("pose", "ipsb.backbone.pose.load_hopenet", "checkpoint", "legacy"),     # a 2017 torch.save
    "bisenet": ("masker", "ipsb.backbone.parsing.load_bisenet", "checkpoint", "zip"),
    "lpips": ("perceptual", "ipsb.backbone.perceptual.Perceptual", "backbone_weights", "zip"),
    "toy": ("regressor", "ipsb.backbone.toy.networks.ToyRegressor", "weights", "zip"),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_backbone_loader_refuses_a_malicious_pickle(loader, world, tmp_path, ipsb, swap_args):
    component, class_path, arg, fmt = LOADERS[loader]
    marker = tmp_path / "MARKER"
    evil = tmp_path / f"evil_{loader}.{'pkl' if fmt != 'zip' else 'pt'}"
    if fmt == "pickle":                                  # an NVlabs .pkl is a plain pickle
        evil.write_bytes(pickle.dumps({"G_ema": __import__("helpers.hostile").hostile.Boom(marker)}))
    else:
        evil_pickle(evil, marker, legacy=fmt == "legacy")
    cfg = yaml.safe_load(world["backbone"].read_text())
    cfg["init_args"][component] = {"class_path": class_path, "init_args": {arg: str(evil)}}
    (tmp_path / "backbone.yaml").write_text(yaml.safe_dump(cfg))
    before = snapshot(tmp_path)
    res = ipsb(*swap_args(tmp_path / "out.png", backbone=tmp_path / "backbone.yaml"))
    line = assert_refused(res, "swap", evil, marker=marker, before=before, roots=(tmp_path,))
    expected = {"nvlabs": "references posix.system", "bfm": "not a MATLAB .mat file"}
    assert expected.get(loader, "pickled Python objects") in line, line


def test_basis_w_plus_and_fid_readers_refuse_malicious_pickles(world, tmp_path, ipsb):
    from ipsb.backbone.fid_inception import load_fid_helper_script
    from ipsb.basis.artifact import Basis
    from ipsb.checkpoints import CorruptCheckpointError
    from ipsb.data.latents import load_wplus_file

    marker = tmp_path / "MARKER"
    basis = torch.load(world["basis_file"], map_location="cpu", weights_only=True)
    evil = evil_pickle(tmp_path / "basis.pt", marker, template=basis)
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--model.init_args.basis", evil,
               "--model.init_args.backbone", world["backbone"], *["--trainer.max_steps", "1"], cwd=tmp_path)
    assert_refused(res, "fit", evil, "pickled Python objects", marker=marker)
    with pytest.raises(UnsafeCheckpointError, match="pickled"):
        load_wplus_file(evil_pickle(tmp_path / "wplus.pt", marker, template={"wplus": torch.zeros(2, 10, 32)}))
    for check in (True, False):                          # sha256 pin first; else not a TorchScript file
        with pytest.raises(CorruptCheckpointError):
            load_fid_helper_script(evil_pickle(tmp_path / "fid.pt", marker), check_sha256=check)
    # a basis file is data: a class_path in its config entry is kept as text, never built
    basis["config"] = {"note": payload(marker)}
    torch.save(basis, tmp_path / "data.pt")
    assert Basis.load(tmp_path / "data.pt").config["note"]["class_path"] == "os.system"
    assert not marker.exists()
