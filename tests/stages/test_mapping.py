"""MappingModule (stage 1) in the toy world: logging, image grids, checkpoints, ablation, resume.

Mechanics only (a few steps, batch 2); the acceptance numbers come from the slow test and
``benchmarks/stage1_toy.py``.
"""
import csv

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from helpers.swap_world import save_oracle_basis, toy_backbone
from ipsb.callbacks.image_grid import SwapImageGrid
from ipsb.data.latents import LatentPairDataModule
from ipsb.stages.base import adamw
from ipsb.stages.mapping_module import MappingModule, load_mapping_stage

LOSSES = ("loss", "loss_id", "loss_geo", "loss_render", "loss_offset")
METRICS = ("exp_error", "pose_error", "id_similarity")


@pytest.fixture(scope="module")
def basis_path(tmp_path_factory):
    return str(save_oracle_basis(tmp_path_factory.mktemp("basis") / "basis.pt"))


def _data(n_train=6, seed=0):
    return LatentPairDataModule(num_train_pairs=n_train, num_val_pairs=2, batch_size=2, val_batch_size=2,
                                truncation_psi=0.7, seed=seed)


def _trainer(root, max_steps, callbacks=(), logger=False, val_every=None, val=True):
    ckpt = ModelCheckpoint(dirpath=str(root / "ckpt"), save_last=True, every_n_train_steps=1, save_top_k=-1)
    return Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=logger, deterministic=True,
                   callbacks=[ckpt, *callbacks], enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, default_root_dir=str(root), limit_val_batches=1 if val else 0,
                   val_check_interval=val_every or max_steps, check_val_every_n_epoch=None,
                   log_every_n_steps=1)


def _module(basis_path, **kw):
    seed_everything(0)
    return MappingModule(toy_backbone(), basis=basis_path, hidden_dim=32, depth=2, optimizer=adamw(1e-2), **kw)


def test_mapping_starts_at_the_source_and_logs_every_term(basis_path, tmp_path):
    module = _module(basis_path)
    dm = _data()
    dm.generator = module.backbone.generator
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(module.swap(batch["w_s"], batch["w_t"]), batch["w_s"])   # zero-initialised head
    grid = SwapImageGrid(every_n_steps=1, max_rows=2)
    trainer = _trainer(tmp_path, 2, [grid], CSVLogger(str(tmp_path), name="log"))
    trainer.fit(module, _data())
    logged = set(trainer.logged_metrics)
    for stage in ("train", "val"):
        for name in LOSSES + METRICS:
            assert f"{stage}/{name}" in logged or f"{stage}/{name}_epoch" in logged, (stage, name, logged)
    for name in METRICS:
        assert f"val/{name}_noswap" in logged
    rows = list(csv.DictReader(open(next(tmp_path.glob("log/*/metrics.csv")))))
    assert any(r.get("train/loss_geo_step") for r in rows)
    assert [p.name for p in grid.saved][:2] == ["train_swap_grid_0000001.png", "train_swap_grid_0000002.png"]
    assert any(p.name.startswith("val_swap_grid") for p in grid.saved)
    # the checkpoint holds the mapper + basis and no backbone tensor; it reloads around a backbone
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not [k for k in ckpt["state_dict"] if k.startswith("backbone.")]
    assert "editor.V" in ckpt["state_dict"] and ckpt["hyper_parameters"]["basis"] == basis_path
    again = load_mapping_stage(str(tmp_path / "ckpt" / "last.ckpt"), module.backbone)
    for k, v in module.editor.state_dict().items():
        assert torch.equal(v, again.editor.state_dict()[k]), k
    # training moved the mapper
    assert module.editor.mapper.net[-1].weight.abs().sum() > 0


def test_mapping_free_mode_is_the_no_basis_ablation(basis_path, tmp_path):
    module = _module(basis_path, mode="free")
    assert module.editor.V.shape[1] == 0
    assert module.editor.mapper.layer_mask.tolist() == [False, False, False, True, True, True, True, True,
                                                        False, False]
    _trainer(tmp_path, 1).fit(module, _data())
    cs, ct = torch.randn(3, 30), torch.randn(3, 30)
    off = module.editor.offset(cs, ct)
    assert off[:, [0, 1, 2, 8, 9]].abs().max() == 0 and off[:, 3:8].abs().max() > 0


def test_mapping_bad_configuration_errors(basis_path, tmp_path):
    with pytest.raises(ValueError, match="needs basis"):
        MappingModule(toy_backbone(), basis=None)
    with pytest.raises(ValueError, match="mode must be"):
        MappingModule(toy_backbone(), basis=basis_path, mode="nobasis")
    from ipsb.checkpoints import MissingCheckpointError
    with pytest.raises(MissingCheckpointError, match="nothere.pt"):
        MappingModule(toy_backbone(), basis=str(tmp_path / "nothere.pt"))
    with pytest.raises(MissingCheckpointError, match="stage-1 checkpoint"):
        load_mapping_stage(str(tmp_path / "none.ckpt"), toy_backbone())
    module = MappingModule(toy_backbone(), basis=basis_path)
    with pytest.raises(ValueError, match=r"batch\['w_t'\] must be \[B,10,32\]"):
        module.training_step({"w_s": torch.zeros(2, 10, 32), "w_t": torch.zeros(2, 18, 512)}, 0)


def test_mapping_resume_from_last_equals_an_uninterrupted_run(basis_path, tmp_path):
    # 2 batches per epoch: killed after 1 step (mid-epoch), resumed to 3 (across an epoch boundary)
    full = _module(basis_path)
    _trainer(tmp_path / "full", 3, val=False).fit(full, _data(n_train=4))
    part = _module(basis_path)
    _trainer(tmp_path / "part", 1, val=False).fit(part, _data(n_train=4))
    resumed = _module(basis_path)
    _trainer(tmp_path / "part", 3, val=False).fit(resumed, _data(n_train=4), ckpt_path="last")
    assert resumed.trainer.global_step == 3
    a, b = full.editor.state_dict(), resumed.editor.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(part.editor.state_dict()["mapper.net.4.weight"], a["mapper.net.4.weight"])
