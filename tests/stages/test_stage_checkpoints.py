"""Stage checkpoints are data: what they hold, how they load, and every way one can be wrong.

* layout: no backbone tensors, the backbone record (config + file hashes), the stage's class, the
  optimizer/scheduler as specs; loads with ``load_from_checkpoint(path)`` alone or around a backbone;
* hostile hyper-parameters (``class_path: os.system`` at the top or nested, through ipsb's builder or
  Lightning's own instantiator) are refused for all four stages and never run (a marker file);
* unreadable files (missing, empty, truncated, not a zip, pickled objects) and checkpoints of the
  wrong stage each end in one line naming the file.
"""
from __future__ import annotations

import os
import shutil
from argparse import ArgumentError
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from helpers.blend_world import basis_module_checkpoint, cached_checkpoints
from helpers.swap_world import TOY_BACKBONE, toy_backbone
from ipsb.checkpoints import (STAGE_KEY, CorruptCheckpointError, MissingCheckpointError, UnexpectedContentError,
                              UnsafeCheckpointError, WrongCheckpointKindError, load_stage_checkpoint)
from ipsb.config_objects import ConfigBuildError
from ipsb.stages.base import BACKBONE_KEY
from ipsb.stages.basis_module import BasisModule
from ipsb.stages.blend_module import BlendModule
from ipsb.stages.detail_module import DetailModule, load_detail_stage
from ipsb.stages.mapping_module import MappingModule, load_mapping_stage


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = dict(cached_checkpoints(tmp_path_factory))
    out["basis"] = basis_module_checkpoint(tmp_path_factory.mktemp("basis_ckpt"))
    return out


STAGES = {"basis": BasisModule, "mapping": MappingModule, "detail": DetailModule, "blend": BlendModule}


def _tampered(src: Path, dst: Path, **hparams) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].update(hparams)
    torch.save(ckpt, dst)
    return dst


def _payload(marker: Path) -> dict:
    return {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}


# ---------------------------------------------------------------------------------------------- layout
def test_stage_checkpoint_layout_and_reload_without_a_backbone(ckpts):
    path = ckpts["mapping"]
    ckpt = torch.load(path, map_location="cpu", weights_only=True)           # plain data only
    assert not [k for k in ckpt["state_dict"] if k.startswith("backbone.")]
    assert path.stat().st_size < 400_000
    hp = ckpt["hyper_parameters"]
    assert ckpt[STAGE_KEY] == hp["_class_path"] == "ipsb.stages.mapping_module.MappingModule"
    assert hp["backbone"] == ckpt[BACKBONE_KEY]["config"] and hp["backbone"]["init_args"]["generator"]
    assert hp["optimizer"]["class_path"] == "torch.optim.AdamW" and hp["optimizer"]["init_args"]["lr"] == 1e-2
    assert hp["lr_scheduler"] is None and "_instantiator" not in hp
    alone = MappingModule.load_from_checkpoint(path)                         # backbone rebuilt from the record
    around = load_mapping_stage(str(path), toy_backbone())
    assert alone.backbone is not around.backbone and alone.backbone.config == around.backbone.config
    for k, v in around.editor.state_dict().items():
        assert torch.equal(v, alone.editor.state_dict()[k]), k
    w = around.backbone.sample_wplus(2, seed=5)
    assert torch.equal(alone.backbone.synthesize(w), around.backbone.synthesize(w))
    # the stage's own state leaves the frozen backbone out, and loads back strictly
    assert not [k for k in alone.state_dict() if k.startswith("backbone.")]
    alone.load_state_dict(around.state_dict(), strict=True)


def test_optimizer_and_scheduler_come_from_config_and_survive_a_checkpoint(ckpts, tmp_path):
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}
    step = {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 7, "gamma": 0.5}}
    module = MappingModule.load_from_checkpoint(ckpts["mapping"], backbone=toy_backbone(), optimizer=sgd,
                                                lr_scheduler=step)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.05 and opt.defaults["momentum"] == 0.9
    assert sched["interval"] == "step" and sched["scheduler"].step_size == 7
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "sgd.ckpt")
    again = MappingModule.load_from_checkpoint(tmp_path / "sgd.ckpt", backbone=toy_backbone())
    opt2 = again.configure_optimizers()["optimizer"]
    assert isinstance(opt2, torch.optim.SGD) and opt2.defaults["momentum"] == 0.9
    # a detail stage keeps its second parameter group at mapper_lr
    detail = load_stage_checkpoint(ckpts["detail"], DetailModule, backbone=toy_backbone(), finetune_mapper=True,
                                   mapper_lr=3e-5)
    groups = detail.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [0.02, 3e-5]


# ---------------------------------------------------------------------------------------------- hostile
@pytest.mark.parametrize("stage", list(STAGES))
def test_hostile_hyperparameters_never_run(stage, ckpts, tmp_path):
    cls, marker = STAGES[stage], tmp_path / "MARKER"
    src = ckpts[stage]
    record = torch.load(src, map_location="cpu", weights_only=True)["hyper_parameters"]["backbone"]
    nested = {**record, "init_args": {**record["init_args"], "generator": _payload(marker)}}
    cases = {"top": {"backbone": _payload(marker)}, "nested": {"backbone": nested},
             # Lightning's own instantiator (allowed by Lightning) goes through the same policy
             "instantiator": {"backbone": nested, "_instantiator": "lightning.pytorch.cli.instantiate_module",
                              "_class_path": f"{cls.__module__}.{cls.__name__}"}}
    if stage != "basis":
        cases["optimizer"] = {"optimizer": _payload(marker)}
        cases["scheduler"] = {"lr_scheduler": _payload(marker)}
    for name, hparams in cases.items():
        path = _tampered(src, tmp_path / f"{name}.ckpt", **hparams)
        with pytest.raises((ConfigBuildError, ArgumentError)) as err:
            cls.load_from_checkpoint(path)
        assert "os.system" in str(err.value), (name, str(err.value))
        with pytest.raises(UnexpectedContentError) as err:
            load_stage_checkpoint(path, cls)
        msg = str(err.value)
        assert str(path) in msg and "os.system" in msg and "\n" not in msg, msg
    assert not marker.exists()


def test_malicious_pickle_is_refused_by_every_stage_loader(ckpts, tmp_path):
    marker = tmp_path / "MARKER"

    class Boom:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    ckpt = torch.load(ckpts["mapping"], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["extra"] = Boom()
    torch.save(ckpt, tmp_path / "pickle.ckpt")
    for load in (lambda p: load_mapping_stage(p, toy_backbone()), lambda p: load_stage_checkpoint(p, MappingModule)):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(str(tmp_path / "pickle.ckpt"))
        msg = str(err.value)
        assert "pickle.ckpt" in msg and "pickled Python objects" in msg and "weights_only=False" not in msg
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- unreadable
def test_every_unreadable_stage_checkpoint_is_named_in_one_line(ckpts, tmp_path):
    good = ckpts["mapping"].read_bytes()
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.ckpt").write_text("not a checkpoint at all")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "weights.ckpt")
    expect = {"empty.ckpt": (CorruptCheckpointError, "empty"),
              "truncated.ckpt": (CorruptCheckpointError, "truncated"),
              "text.ckpt": (CorruptCheckpointError, "not a PyTorch checkpoint"),
              "weights.ckpt": (WrongCheckpointKindError, "not a Lightning stage checkpoint"),
              "missing.ckpt": (MissingCheckpointError, "stage-1 checkpoint")}
    for name, (error, words) in expect.items():
        with pytest.raises(error) as err:
            load_mapping_stage(str(tmp_path / name), toy_backbone())
        msg = str(err.value)
        assert name in msg and words in msg and "\n" not in msg, msg
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_a_checkpoint_of_the_wrong_stage_says_which_kind_it_is(ckpts):
    with pytest.raises(WrongCheckpointKindError, match="is a DetailModule checkpoint; mapping_checkpoint expects "
                                                       "a MappingModule one"):
        DetailModule(toy_backbone(), mapping_checkpoint=str(ckpts["detail"]))
    with pytest.raises(WrongCheckpointKindError, match="is a MappingModule checkpoint"):
        load_detail_stage(str(ckpts["mapping"]), toy_backbone())
    from ipsb.swap import FaceSwapper

    with pytest.raises(WrongCheckpointKindError, match=r"is a DetailModule checkpoint; the mapping checkpoint "
                                                       r"\(--mapping\) expects a MappingModule one"):
        FaceSwapper.from_checkpoints(ckpts["detail"], ckpts["detail"], ckpts["blend"], toy_backbone())
    with pytest.raises(WrongCheckpointKindError, match=r"BasisModule checkpoint; the blend checkpoint \(--blend\)"):
        FaceSwapper.from_checkpoints(ckpts["mapping"], ckpts["detail"], ckpts["basis"], toy_backbone())


# ---------------------------------------------------------------------------------------------- basis parts
def test_basis_builds_only_the_parts_it_uses_and_records_them_all(tmp_path, monkeypatch):
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    cfg = yaml.safe_load(TOY_BACKBONE.read_text())
    cfg["init_args"]["encoder"] = {"class_path": "ipsb.backbone.encoder.load_e4e",
                                   "init_args": {"path_or_name": "missing_e4e.pt"}}
    cfg["init_args"]["masker"] = {"class_path": "ipsb.backbone.parsing.load_bisenet",
                                  "init_args": {"checkpoint": "missing_parser.pth"}}
    cfg["init_args"]["pose"] = {"class_path": "ipsb.backbone.pose.load_hopenet",
                                "init_args": {"checkpoint": "missing_hopenet.pkl"}}
    path = tmp_path / "backbone.yaml"
    path.write_text(yaml.safe_dump(cfg))
    basis = BasisModule(str(path), output_path=str(tmp_path / "basis.pt"))
    bb = basis.backbone
    assert bb.generator is not None and bb.regressor is not None and bb.identity is not None
    assert bb.encoder is None and bb.masker is None and bb.pose is None and bb.perceptual is None
    assert set(bb.unbuilt) == {"encoder", "masker", "pose", "perceptual", "renderer"}
    recorded = basis.hparams["backbone"]["init_args"]
    assert recorded["encoder"]["init_args"]["path_or_name"] == "missing_e4e.pt"
    assert {"masker", "pose", "perceptual"} <= set(recorded)
    with pytest.raises(ValueError, match="without its 'encoder'"):
        bb.encode(torch.zeros(1, 3, 64, 64))
    from ipsb.backbone.bundle import FaceBackbone

    with pytest.raises(MissingCheckpointError) as err:               # the stages that need them all
        FaceBackbone.from_config(path)
    assert all(n in str(err.value) for n in ("missing_e4e.pt", "missing_parser.pth", "missing_hopenet.pkl"))
    shutil.rmtree(tmp_path / "torch", ignore_errors=True)


def test_ipsb_swap_with_a_hostile_stage_checkpoint_never_runs_it(ckpts, tmp_path, capsys):
    from PIL import Image

    from ipsb.cli import main

    marker = tmp_path / "MARKER"
    evil = _tampered(ckpts["mapping"], tmp_path / "evil.ckpt", optimizer=_payload(marker))
    Image.new("RGB", (64, 64)).save(tmp_path / "face.png")
    code = main(["swap", "--source", str(tmp_path / "face.png"), "--target", str(tmp_path / "face.png"),
                 "--out", str(tmp_path / "out.png"), "--backbone", str(TOY_BACKBONE), "--mapping", str(evil),
                 "--detail", str(ckpts["detail"]), "--blend", str(ckpts["blend"])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "evil.ckpt" in err and "os.system" in err and len(err.splitlines()) == 1, err
    assert not marker.exists() and not (tmp_path / "out.png").exists()
