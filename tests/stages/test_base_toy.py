"""StageModule on the toy backbone: frozen backbone through training, lean checkpoints, hash checks,
and the one-line backbone switch in a LightningCLI config."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ipsb.backbone.bundle import FaceBackbone, load_config
from ipsb.checkpoints import MissingCheckpointError
from ipsb.config_objects import allow_packages
from ipsb.stages.base import BACKBONE_KEY, StageModule, adam

allow_packages(__name__)   # the configs below name this module's ToyHeadStage

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"


class ToyHeadStage(StageModule):
    """A dummy stage: a trainable head on the frozen regressor's coefficients of generated images."""

    def __init__(self, backbone: FaceBackbone, hidden: int = 8, lr: float = 1e-2):
        super().__init__(backbone, optimizer=adam(lr))
        self.save_hyperparameters()
        self.head = nn.Sequential(nn.Linear(30, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        (wplus,) = batch
        coeffs = self.backbone.coeffs(self.backbone.synthesize(wplus))
        return self.head(coeffs).pow(2).mean() + self.backbone.embed(self.backbone.synthesize(wplus)).sum() * 0


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return FaceBackbone.from_config(CONFIGS / "backbone" / "toy.yaml")


def _fit(stage, tmp_path, steps=2):
    w = stage.backbone.sample_wplus(4, seed=0)
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(stage, DataLoader(TensorDataset(w), batch_size=2))
    return trainer


def test_toy_stage_training_leaves_backbone_frozen(backbone, tmp_path):
    stage = ToyHeadStage(backbone)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = [p.clone() for p in stage.head.parameters()]
    trainer = _fit(stage, tmp_path)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(head_before, stage.head.parameters()))
    held = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in stage.head.parameters()}
    assert not any(id(p) in held for p in backbone.parameters())
    stage.train()
    assert stage.training and stage.head.training and not backbone.training
    assert not any(m.training for m in backbone.modules())


def test_toy_stage_refuses_optimizer_with_backbone_params(backbone, tmp_path):
    class Greedy(ToyHeadStage):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(ValueError, match="backbone parameters"):
        _fit(Greedy(backbone), tmp_path, steps=1)


def test_toy_stage_checkpoint_is_lean_and_reloads(backbone, tmp_path):
    stage = ToyHeadStage(backbone, hidden=5)
    trainer = _fit(stage, tmp_path)
    path = tmp_path / "stage.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert not any(k.startswith("backbone.") for k in ckpt["state_dict"])
    assert set(ckpt["state_dict"]) == {f"head.{k}" for k in stage.head.state_dict()}
    assert path.stat().st_size < 200_000
    assert ckpt["hyper_parameters"]["backbone"] == backbone.config
    assert ckpt[BACKBONE_KEY]["file_hashes"] == backbone.file_hashes()
    assert set(stage.state_dict()) == set(ckpt["state_dict"])

    again = ToyHeadStage.load_from_checkpoint(path)
    assert again.hparams.hidden == 5
    for a, b in zip(stage.head.state_dict().values(), again.head.state_dict().values()):
        assert torch.equal(a, b)
    w = backbone.sample_wplus(2, seed=9)
    assert torch.equal(again.backbone.synthesize(w), backbone.synthesize(w))
    assert all(not p.requires_grad for p in again.backbone.parameters())


def test_toy_stage_refuses_changed_checkpoint_file(tmp_path):
    """A backbone file whose sha256 changed since training is refused, naming the file."""
    from ipsb.backbone.toy.networks import ASSETS

    weights = tmp_path / "my_regressor.pt"
    shutil.copy(ASSETS / "regressor.pt", weights)
    cfg = load_config(CONFIGS / "backbone" / "toy.yaml")
    cfg["init_args"]["regressor"]["init_args"]["weights"] = str(weights)
    stage = ToyHeadStage(cfg)
    assert stage.backbone.checkpoint_files()["regressor"] == str(weights)
    trainer = _fit(stage, tmp_path, steps=1)
    path = tmp_path / "stage.ckpt"
    trainer.save_checkpoint(path)
    ToyHeadStage.load_from_checkpoint(path)                       # unchanged: loads
    state = torch.load(weights, weights_only=True)
    state["net.head.3.bias"] = state["net.head.3.bias"] + 1
    torch.save(state, weights)
    with pytest.raises(ValueError, match="my_regressor.pt"):
        ToyHeadStage.load_from_checkpoint(path)


def _stage_yaml(tmp_path, backbone_line: str) -> Path:
    stage_dir = tmp_path / "lightning_configs" / "toy"
    stage_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(CONFIGS / "backbone", tmp_path / "lightning_configs" / "backbone", dirs_exist_ok=True)
    cfg = stage_dir / "stage.yaml"
    cfg.write_text(f"""model:
  class_path: {__name__}.ToyHeadStage
  init_args:
    backbone: {backbone_line}
    hidden: 3
""")
    return cfg


def _cli(cfg: Path):
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(LightningModule, None, subclass_mode_model=True, run=False,
                        args=["--config", str(cfg), "--trainer.logger=false"], save_config_callback=None)


def test_toy_stage_from_cli_config_and_backbone_switch(tmp_path, monkeypatch):
    cli = _cli(_stage_yaml(tmp_path, "../backbone/toy.yaml"))
    stage = cli.model
    assert isinstance(stage.backbone, FaceBackbone) and stage.hparams.hidden == 3
    assert stage.hparams["backbone"]["init_args"]["generator"]["class_path"].endswith("ToyGenerator")
    assert stage.backbone.config is not None
    path = tmp_path / "cli.ckpt"
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(stage)
    trainer.save_checkpoint(path)
    again = ToyHeadStage.load_from_checkpoint(path)
    assert again.hparams.hidden == 3 and torch.equal(again.head[0].weight, stage.head[0].weight)

    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(Exception) as err:
        _cli(_stage_yaml(tmp_path, "../backbone/ffhq1024.yaml"))
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain)
    assert "stylegan2-ffhq-config-f.pt" in text and "not found" in text
