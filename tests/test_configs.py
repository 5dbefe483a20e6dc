"""Every YAML under lightning_configs/ parses against the code's signatures (nothing is instantiated).

Stage configs (``trainer``/``model``/``data``) go through the LightningCLI parser that ``ipsb fit``
uses (subclass mode for model and data, so every ``class_path`` and ``init_args`` is type-checked,
including the nested backbone file each stage points at); backbone configs
(``lightning_configs/backbone/*.yaml``) are parsed as a :class:`FaceBackbone` argument. No weights
are loaded: official-weight backbones are only checked, never built.
"""
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI

from ipsb.backbone.bundle import FaceBackbone

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
