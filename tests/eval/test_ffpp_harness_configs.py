"""The shipped eval configs parse against the code's signatures; official ones name missing files."""
from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from ipsb.checkpoints import MissingCheckpointError
from ipsb.eval.evaluator import EvaluationModule
from ipsb.data.toy_ffpp import ToyFFPPDataModule

CONFIGS = Path(__file__).resolve().parent.parent.parent / "lightning_configs" / "eval"


def build(name, monkeypatch, tmp_path):
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))      # an empty checkpoint folder
    monkeypatch.chdir(tmp_path)
    return LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                        run=False, save_config_callback=None, args=["--config", str(CONFIGS / name)])


def test_ffpp_toy_config_builds(monkeypatch, tmp_path):
    cli = build("ffpp_toy.yaml", monkeypatch, tmp_path)
    assert isinstance(cli.model, EvaluationModule) and isinstance(cli.datamodule, ToyFFPPDataModule)
    assert [m.name for m in cli.model.methods] == ["copy target", "copy source"]
    assert cli.model.overwrite is False and cli.trainer.accelerator.__class__.__name__ == "CPUAccelerator"


@pytest.mark.parametrize("name, files", [
    ("ffpp.yaml", ["net_sphere20_data_vggface2_acc_9955.pth", "epoch_20.pth", "hopenet_robust_alpha1.pkl"]),
    ("celebahq.yaml", ["model_ir_se50.pth", "epoch_20.pth", "hopenet_robust_alpha1.pkl"]),
])
def test_official_configs_name_every_missing_file(name, files, monkeypatch, tmp_path):
    # LightningCLI re-raises the MissingCheckpointError inside a ValueError that keeps its message
    with pytest.raises((MissingCheckpointError, ValueError)) as e:
        build(name, monkeypatch, tmp_path)
    assert "checkpoint files missing" in str(e.value)
    for f in files:
        assert f in str(e.value)
