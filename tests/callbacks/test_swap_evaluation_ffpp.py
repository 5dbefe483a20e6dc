"""SwapEvaluation on the toy FF++ tree equals ``ipsb test --config lightning_configs/eval/ffpp_toy.yaml``.

A toy detail stage (from a briefly trained stage 1) trains one step with the callback measuring at the
end of fit on a small toy FF++ tree, with the networks of ``ffpp_toy.yaml`` (clean preset, toy
networks) and the swapper options ``ipsb test`` gets. The checkpoint of that same state then goes
through ``ipsb test`` as an ``IpsbSwapper`` row; both rows must agree (1e-6 relative; both run the
same IpsbSwapper code on the same batches, so they are expected to be identical).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Trainer, seed_everything

from helpers.blend_world import cached_checkpoints
from helpers.swap_world import toy_backbone
from ipsb.callbacks.swap_evaluation import SwapEvaluation
from ipsb.data.latents import LatentPairDataModule
from ipsb.data.toy_ffpp import ToyFFPPDataModule
from ipsb.stages.base import adamw
from ipsb.stages.detail_module import DetailModule

REPO = Path(__file__).resolve().parents[2]
FFPP_TOY = REPO / "lightning_configs" / "eval" / "ffpp_toy.yaml"
TREE = {"num_videos": 3, "num_frames": 6, "frames_per_video": 3, "batch_size": 4}
SWAPPER = {"inversion": "optimize", "invert_steps": 3, "invert_perceptual": 0.0}
COLUMNS = ("id_top1_pct", "id_top5_pct", "id_cosine", "exp_l2", "pose_deg", "num_items")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return cached_checkpoints(tmp_path_factory)


def test_callback_row_equals_the_ipsb_test_row_of_the_same_checkpoint(ckpts, tmp_path, monkeypatch):
    from ipsb.cli import main

    networks = yaml.safe_load(FFPP_TOY.read_text())["model"]["init_args"]["networks"]
    data = dict(root=str(tmp_path / "ffpp"), manifest_path=str(tmp_path / "manifest.json"), **TREE)
    cb = SwapEvaluation(every_n_val_runs=0, networks=networks, fid=False, data=ToyFFPPDataModule(**data),
                        swapper_args=SWAPPER)
    seed_everything(0)
    stage = DetailModule(toy_backbone(), mapping_checkpoint=str(ckpts["mapping"]), optimizer=adamw(0.02))
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, callbacks=[cb],
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, deterministic=True,
                      default_root_dir=str(tmp_path / "fit"))
    trainer.fit(stage, LatentPairDataModule(num_train_pairs=4, num_val_pairs=2, batch_size=4, seed=1))
    detail_ckpt = tmp_path / "detail.ckpt"
    trainer.save_checkpoint(str(detail_ckpt))
    assert [h["step"] for h in cb.history] == [1]
    row = cb.history[0]["row"]
    assert row["preset"] == "clean" and row["num_items"] == 9

    backbone = tmp_path / "backbone.yaml"
    backbone.write_text(yaml.safe_dump(stage.backbone.config))
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"logger": False, "default_root_dir": str(tmp_path / "eval")},
        "model": {"init_args": {"output_dir": str(tmp_path / "eval"), "methods": [
            {"class_path": "ipsb.eval.methods.CopyTarget"}, {"class_path": "ipsb.eval.methods.CopySource"},
            {"class_path": "ipsb.eval.methods.IpsbSwapper",
             "init_args": {"mapping_ckpt": str(ckpts["mapping"]), "detail_ckpt": str(detail_ckpt),
                           "backbone": str(backbone), "swapper_args": SWAPPER, "output": "final"}}]}},
        "data": {"init_args": data}}))
    monkeypatch.chdir(tmp_path)
    assert main(["test", "--config", str(FFPP_TOY), "--config", str(override)]) == 0
    table = json.loads((tmp_path / "eval" / "ffpp_toy.json").read_text())
    ipsb_test = next(r for r in table["rows"] if r["method"] == "StyleIPSB (ipsb)")
    for key in COLUMNS:
        assert row[key] == pytest.approx(ipsb_test[key], rel=1e-6, abs=0), (key, row[key], ipsb_test[key])
    print("callback:", {k: row[k] for k in COLUMNS}, "\nipsb test:", {k: ipsb_test[k] for k in COLUMNS})
    # not a trivial row: the swap is neither bound
    bounds = {r["method"]: r for r in table["rows"]}
    assert row["exp_l2"] != pytest.approx(bounds["copy target"]["exp_l2"], abs=1e-6)
    assert row["id_cosine"] != pytest.approx(bounds["copy source"]["id_cosine"], abs=1e-6)
