"""DetailModule (stage 2) in the toy world: starts at the stage-1 swap, learns lambda, logs, checkpoints.

Mechanics only (a few steps, batch 2); the acceptance numbers come from ``benchmarks/stage1_toy.py``.
"""
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from helpers.swap_world import save_oracle_basis, toy_backbone
from ipsb.callbacks.image_grid import SwapImageGrid
from ipsb.checkpoints import MissingCheckpointError
from ipsb.data.latents import LatentPairDataModule
from ipsb.stages.base import adamw
from ipsb.stages.detail_module import DetailModule
from ipsb.stages.mapping_module import MappingModule
from ipsb.stages.pair_batch import measure_pairs


def _data(seed=0):
    return LatentPairDataModule(num_train_pairs=4, num_val_pairs=2, batch_size=2, val_batch_size=2, seed=seed)


def _trainer(root, steps, callbacks=(), val=True):
    return Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, deterministic=True,
                   callbacks=[ModelCheckpoint(dirpath=str(root), save_last=True, save_top_k=0), *callbacks],
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_val_batches=1 if val else 0, val_check_interval=steps, check_val_every_n_epoch=None,
                   log_every_n_steps=1, default_root_dir=str(root))


@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    basis = save_oracle_basis(root / "basis.pt")
    seed_everything(0)
    module = MappingModule(toy_backbone(), basis=str(basis), hidden_dim=32, depth=2, optimizer=adamw(1e-2))
    _trainer(root, 1, val=False).fit(module, _data())
    return str(root / "last.ckpt"), module


def test_detail_starts_at_stage1_and_trains_only_lambda(stage1_ckpt, tmp_path):
    path, stage1 = stage1_ckpt
    seed_everything(0)
    module = DetailModule(toy_backbone(), mapping_checkpoint=path, optimizer=adamw(0.05))
    for k, v in stage1.editor.state_dict().items():                 # the stage-1 editor, as trained
        assert torch.equal(v, module.editor.state_dict()[k]), k
    bb = module.backbone
    w = bb.sample_wplus(4, seed=3, truncation_psi=0.7)
    pairs = measure_pairs(bb, w[:2], w[2:])
    with torch.no_grad():
        w_st, w_mix = module.mix(pairs)
    assert torch.equal(w_mix, w_st)                                 # lambda = 1 on every layer at start
    editor_before = {k: v.clone() for k, v in module.editor.state_dict().items()}
    grid = SwapImageGrid(every_n_steps=2, max_rows=2)
    trainer = _trainer(tmp_path, 2, [grid])
    trainer.fit(module, _data(seed=1))
    logged = set(trainer.logged_metrics)
    for name in ("loss", "loss_id", "loss_p", "loss_geo", "loss_render"):
        assert f"train/{name}_step" in logged and f"val/{name}" in logged, name
    for name in ("exp_error", "pose_error", "id_similarity", "lpips_outside"):
        assert f"val/{name}" in logged and f"val/{name}_stage1" in logged and f"train/{name}" in logged, name
    assert "val/lambda/9" in logged
    lam = module.layer_lambda.raw.detach()
    assert (lam >= 0).all() and (lam <= 1).all() and (lam < 1).any()  # lambda moved, stays in [0,1]
    for k, v in module.editor.state_dict().items():                 # the mapper stayed frozen
        assert torch.equal(v, editor_before[k]), k
    assert {p.name for p in grid.saved} >= {"train_swap_grid_0000002.png"}
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    sd = ckpt["state_dict"]
    assert "layer_lambda.raw" in sd and "editor.V" in sd and not [k for k in sd if k.startswith("backbone.")]
    # reloading the stage-2 checkpoint around the same backbone gives the trained lambda
    again = DetailModule.load_from_checkpoint(str(tmp_path / "last.ckpt"), backbone=bb)
    assert torch.equal(again.layer_lambda.raw, module.layer_lambda.raw)


def test_detail_per_pair_head_and_finetuning(stage1_ckpt, tmp_path):
    path, _ = stage1_ckpt
    seed_everything(0)
    module = DetailModule(toy_backbone(), mapping_checkpoint=path, per_pair_lambda=True, finetune_mapper=True,
                          perceptual_region="all")
    assert module.layer_lambda.head is not None
    opt = module.configure_optimizers()
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == module.mapper_lr
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in held for p in module.editor.parameters())
    assert not any(id(p) in held for p in module.backbone.parameters())


def test_detail_bad_configuration_errors(stage1_ckpt, tmp_path):
    path, _ = stage1_ckpt
    with pytest.raises(MissingCheckpointError, match="stage-1 checkpoint"):
        DetailModule(toy_backbone(), mapping_checkpoint=str(tmp_path / "none.ckpt"))
    with pytest.raises(ValueError, match="perceptual_region"):
        DetailModule(toy_backbone(), mapping_checkpoint=path, perceptual_region="face")
