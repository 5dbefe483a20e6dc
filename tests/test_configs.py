"""Every YAML under lightning_configs/ parses against the code's signatures, and is built.

Parsed: stage configs (``trainer``/``model``/``data``) go through the LightningCLI parser that
``ipsb fit`` uses (subclass mode for model and data, so every ``class_path`` and ``init_args`` is
type-checked, including the nested backbone file each stage points at); backbone configs
(``lightning_configs/backbone/*.yaml``) are parsed as a :class:`FaceBackbone` argument.

Built: model, data and trainer objects constructed by ipsb's LightningCLI (typed, allowlisted
building; a stage builds only its backbone parts), stopping before the subcommand runs. Toy configs
are built in the working directory of the toy chain, official ones in the stand-in chain's with the
stand-in official checkpoints as ``$IPSB_CHECKPOINTS`` (``helpers.chains``): stages 1-3 need the
basis file and the checkpoints of the stages before them.
"""
import importlib
import re
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI

from ipsb.backbone.bundle import FaceBackbone
from ipsb.lightning_cli import IpsbCLI, StageArgumentParser

CONFIGS = Path(__file__).resolve().parent.parent / "lightning_configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))


class ParseOnlyCLI(LightningCLI):
    """The ``ipsb fit`` parser, stopping before anything is built."""

    def instantiate_classes(self) -> None:
        pass


class PredictParseOnlyCLI(ParseOnlyCLI):
    """The same with the options ``ipsb predict`` adds (``Trainer.predict``'s, e.g. ``return_predictions``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_method_arguments(Trainer, "predict", skip=set(LightningCLI.subcommands()["predict"]))


def _is_backbone(path: Path) -> bool:
    return "class_path" in (yaml.safe_load(path.read_text()) or {})


def test_there_are_configs_to_check():
    names = {p.relative_to(CONFIGS).as_posix() for p in FILES}
    assert {"mapping.yaml", "detail.yaml", "toy/mapping.yaml", "toy/detail.yaml", "backbone/toy.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(CONFIGS).as_posix() for p in FILES])
def test_config_parses(path):
    if _is_backbone(path):
        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--backbone", type=FaceBackbone)
        cfg = parser.parse_object({"backbone": yaml.safe_load(path.read_text())})
        assert cfg.backbone.class_path.endswith("FaceBackbone")
        return
    raw = yaml.safe_load(path.read_text())
    cli_class = PredictParseOnlyCLI if "return_predictions" in raw else ParseOnlyCLI
    cli = cli_class(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    run=False, args=["--config", str(path)], parser_kwargs={"exit_on_error": False},
                    save_config_callback=None)
    assert cli.config.model.class_path and cli.config.data.class_path
    assert cli.config.model.class_path == raw["model"]["class_path"]


# ----------------------------------------------------------------------------------------------- built

#: Size options the 64 px stand-in generator needs (its feature resolutions are 4..64), and the FID
#: network of CelebA-HQ (its file is pinned by sha256: no stand-in can exist; see helpers.chains).
STANDIN_OVERRIDES = {
    "blend.yaml": ["--model.init_args.resolutions", "[16, 32, 64]", "--model.init_args.input_size", "64"],
    "eval/celebahq.yaml": ["--model.init_args.networks.fid", None],
}


class BuildOnlyCLI(IpsbCLI):
    """The ``ipsb`` CLI without its subcommand: parse, then build every object (``run=False``)."""


class PredictBuildOnlyCLI(BuildOnlyCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_method_arguments(Trainer, "predict", skip=set(LightningCLI.subcommands()["predict"]))


def build_config(path: Path, extra=()):
    raw = yaml.safe_load(path.read_text())
    cli_class = PredictBuildOnlyCLI if "return_predictions" in raw else BuildOnlyCLI
    return cli_class(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     parser_class=StageArgumentParser, save_config_callback=None, auto_configure_optimizers=False,
                     run=False, args=["--config", str(path), *extra], parser_kwargs={"exit_on_error": False})


def _named_class(class_path: str) -> type:
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _chain_for(name: str, request):
    return request.getfixturevalue("toy_chain" if name.startswith("toy/") or name == "eval/ffpp_toy.yaml"
                                   else "standin_chain")


def _overrides(name: str) -> list[str]:
    from helpers.chains import FID_STANDIN

    return [FID_STANDIN if a is None else a for a in STANDIN_OVERRIDES.get(name, [])]


RUN_CONFIGS = [p for p in FILES if not _is_backbone(p)]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.relative_to(CONFIGS).as_posix() for p in RUN_CONFIGS])
def test_config_builds(path, request):
    from ipsb.backbone.bundle import COMPONENTS
    from ipsb.checkpoint_io import AtomicCheckpointIO
    from ipsb.stages.base import StageModule

    name = path.relative_to(CONFIGS).as_posix()
    raw = yaml.safe_load(path.read_text())
    chain = _chain_for(name, request)
    with chain.inside():
        cli = build_config(path, _overrides(name))
    assert type(cli.model) is _named_class(raw["model"]["class_path"])
    assert type(cli.datamodule) is _named_class(raw["data"]["class_path"])
    trainer_cfg = raw.get("trainer", {})
    for cb in trainer_cfg.get("callbacks", []):
        assert any(type(c) is _named_class(cb["class_path"]) for c in cli.trainer.callbacks), cb["class_path"]
    if any(p["class_path"].endswith("AtomicCheckpointIO") for p in trainer_cfg.get("plugins", [])):
        assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    backbone = getattr(cli.model, "backbone", None)
    if backbone is not None:                       # built: the parts the module uses, and no others
        named = set(yaml.safe_load((path.parent / raw["model"]["init_args"]["backbone"]).read_text())["init_args"])
        used = set(getattr(type(cli.model), "backbone_components", COMPONENTS)) & named
        assert {c for c in COMPONENTS if getattr(backbone, c, None) is not None} == used
        if isinstance(cli.model, StageModule):
            recorded = cli.model.hparams["backbone"]["init_args"]
            assert {k for k, v in recorded.items() if v is not None} == named     # the full config is recorded


def test_shipped_celebahq_config_needs_only_the_fid_file_beyond_the_standins(standin_chain):
    """The documented CelebA-HQ command, as shipped, with every stand-in present: one line, naming the FID
    Inception's file as the only one missing (no metric network of the others)."""
    from helpers.chains import CELEBAHQ
    from ipsb.backbone.fid_inception import CHECKPOINT_NAME

    where = {"/path/to/CelebA-HQ/images": str(standin_chain.path("images")),
             "/path/to/swaps": str(standin_chain.path("swaps"))}
    err = standin_chain.ipsb(f"{CELEBAHQ} --data.init_args.swaps /path/to/swaps --model.init_args.data_swaps_name "
                             "MyMethod", "--trainer.enable_progress_bar", "false", replace=where, expect=2)
    line = [ln for ln in err.splitlines() if ln.startswith("ipsb test: ")]
    assert len(line) == 1 and "checkpoint files missing" in line[0] and CHECKPOINT_NAME in line[0], err
    assert set(re.findall(r"\[(\w+)\]", line[0])) == {"fid"}, line[0]          # [component] of each missing file


@pytest.mark.parametrize("name", ["backbone/toy.yaml", "backbone/ffhq1024.yaml"])
def test_backbone_config_builds_every_component(name, request):
    from ipsb.backbone.bundle import COMPONENTS

    path = CONFIGS / name
    named = set(yaml.safe_load(path.read_text())["init_args"])
    chain = _chain_for("toy/" if "toy" in name else name, request)
    with chain.inside():
        backbone = FaceBackbone.from_config(path)
    assert {c for c in COMPONENTS if getattr(backbone, c, None) is not None} == named
    if name == "backbone/ffhq1024.yaml":        # every file found through $IPSB_CHECKPOINTS
        files = {Path(f).name for f in backbone.checkpoint_files().values()}
        assert {"stylegan2-ffhq-config-f.pt", "e4e_ffhq_encode.pt", "epoch_20.pth", "79999_iter.pth"} <= files


def test_invert_config_needs_only_the_generator_e4e_and_lpips(standin_checkpoints, tmp_path, monkeypatch):
    """``invert.yaml`` builds with a checkpoint folder holding only the generator, e4e and LPIPS' AlexNet
    (the inversion builds only the backbone parts it uses), and names e4e when it is missing."""
    from ipsb.checkpoints import MissingCheckpointError
    from ipsb.inversion import InversionModule

    names = ("stylegan2-ffhq-config-f.pt", "e4e_ffhq_encode.pt", "alexnet-owt-7be5be79.pth")
    (tmp_path / "ckpt").mkdir()
    for name in names:
        (tmp_path / "ckpt" / name).symlink_to(standin_checkpoints.files[name])
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    cli = build_config(CONFIGS / "invert.yaml")
    assert type(cli.model) is InversionModule
    assert {c for c in ("generator", "encoder", "perceptual", "face_model", "regressor", "identity", "masker", "pose")
            if getattr(cli.model.backbone, c, None) is not None} == {"generator", "encoder", "perceptual"}
    (tmp_path / "ckpt" / "e4e_ffhq_encode.pt").unlink()
    with pytest.raises(MissingCheckpointError, match="e4e_ffhq_encode.pt"):
        build_config(CONFIGS / "invert.yaml")
