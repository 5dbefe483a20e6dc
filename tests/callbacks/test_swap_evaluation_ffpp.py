"""SwapEvaluation on the toy FF++ tree equals ``ipsb test --config lightning_configs/eval/ffpp_toy.yaml``.

``ipsb fit --config lightning_configs/toy/detail.yaml`` trains one step from a briefly trained stage 1
(32 px toy backbone) with the callback configured in YAML as a user would: the toy FF++ DataModule
as its held-out pairs, the ``networks`` entry of ``ffpp_toy.yaml`` (clean preset, toy networks) and
the swapper options ``ipsb test`` gets; it measures at the end of fit and logs to a CSV logger. The
checkpoint of that same state then goes through ``ipsb test`` as an ``IpsbSwapper`` row. The logged
values must equal the table's row (1e-6 relative; both run the same IpsbSwapper code on the same
batches, so they are expected to be identical).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from helpers.blend_world import cached_checkpoints, toy_backbone_yaml

REPO = Path(__file__).resolve().parents[2]
DETAIL = REPO / "lightning_configs" / "toy" / "detail.yaml"
FFPP_TOY = REPO / "lightning_configs" / "eval" / "ffpp_toy.yaml"
TREE = {"num_videos": 3, "num_frames": 6, "frames_per_video": 2, "batch_size": 4}
SWAPPER = {"inversion": "optimize", "invert_steps": 3, "invert_perceptual": 0.0}
LOGGED = {"id_top1_pct": "val/id_top1", "id_top5_pct": "val/id_top5", "id_cosine": "val/id_cosine",
          "exp_l2": "val/exp_l2", "pose_deg": "val/pose_deg"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return cached_checkpoints(tmp_path_factory)


def test_callback_values_equal_the_ipsb_test_row_of_the_same_checkpoint(ckpts, tmp_path, monkeypatch):
    from ipsb.cli import main

    monkeypatch.chdir(tmp_path)
    networks = yaml.safe_load(FFPP_TOY.read_text())["model"]["init_args"]["networks"]
    data = dict(root=str(tmp_path / "ffpp"), manifest_path=str(tmp_path / "manifest.json"), **TREE)
    backbone = toy_backbone_yaml(tmp_path / "backbone.yaml")
    fit = tmp_path / "fit.yaml"
    fit.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 1, "limit_val_batches": 0, "default_root_dir": str(tmp_path / "fit"),
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "fit"), "name": "logs"}},
                    "callbacks": [
                        {"class_path": "ipsb.callbacks.swap_evaluation.SwapEvaluation",
                         "init_args": {"every_n_val_runs": 0, "fid": False, "networks": networks,
                                       "data": {"class_path": "ipsb.data.toy_ffpp.ToyFFPPDataModule",
                                                "init_args": data},
                                       "swapper_args": SWAPPER}},
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                         "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True,
                                       "every_n_train_steps": 1}}]},
        "model": {"init_args": {"backbone": str(backbone), "mapping_checkpoint": str(ckpts["mapping"])}},
        "data": {"init_args": {"num_train_pairs": 4, "num_val_pairs": 2, "batch_size": 4}}}))
    assert main(["fit", "--config", str(DETAIL), "--config", str(fit)]) == 0
    rows = list(csv.DictReader(open(next((tmp_path / "fit" / "logs").glob("*/metrics.csv")))))
    logged = next(r for r in rows if r.get("val/id_cosine"))
    assert int(logged["step"]) == 1 and "val/fid" not in logged

    test = tmp_path / "test.yaml"
    test.write_text(yaml.safe_dump({
        "trainer": {"logger": False, "default_root_dir": str(tmp_path / "eval")},
        "model": {"init_args": {"output_dir": str(tmp_path / "eval"), "methods": [
            {"class_path": "ipsb.eval.methods.CopyTarget"}, {"class_path": "ipsb.eval.methods.CopySource"},
            {"class_path": "ipsb.eval.methods.IpsbSwapper",
             "init_args": {"mapping_ckpt": str(ckpts["mapping"]), "detail_ckpt": str(tmp_path / "ckpt" / "last.ckpt"),
                           "backbone": str(backbone), "swapper_args": SWAPPER}}]}},
        "data": {"init_args": data}}))
    assert main(["test", "--config", str(FFPP_TOY), "--config", str(test)]) == 0
    table = {r["method"]: r for r in json.loads((tmp_path / "eval" / "ffpp_toy.json").read_text())["rows"]}
    row = table["StyleIPSB (ipsb)"]
    assert row["preset"] == "clean" and row["num_items"] == 6
    for key, name in LOGGED.items():
        assert float(logged[name]) == pytest.approx(row[key], rel=1e-6, abs=0), (key, logged[name], row[key])
    print("callback:", {n: float(logged[n]) for n in LOGGED.values()}, "\nipsb test:", {k: row[k] for k in LOGGED})
    # not a trivial row: the swap is neither bound
    assert row["exp_l2"] != pytest.approx(table["copy target"]["exp_l2"], abs=1e-6)
    assert row["id_cosine"] != pytest.approx(table["copy source"]["id_cosine"], abs=1e-6)
