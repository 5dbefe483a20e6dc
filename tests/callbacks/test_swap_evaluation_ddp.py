"""SwapEvaluation under DDP: a 2-process CPU toy mapping fit logs the numbers of a 1-process fit.

Both runs are ``ipsb fit --config lightning_configs/toy/mapping.yaml`` (its optimizer and losses) with
a SwapEvaluation measuring 7 held-out pairs in batches of 3 after each of 2 validation runs: the 3
batches split 2 + 1 over the processes, one process repeats a batch and the metrics de-duplicate it.
Both fits train on the same pairs with the same gradients: 2 processes take one pair each per step
(DDP averages their gradients), 1 process accumulates the same two pairs as 2 batches of one (Lightning
halves each loss), and halving commutes with rounding, so the two stages stay bit-identical. What is
left to differ is the callback's split of the pairs. Tolerance: 1e-6 relative on every logged value
(measured: 0).
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.swap_world import save_oracle_basis

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "lightning_configs" / "toy" / "mapping.yaml"
NAMES = ("val/fid", "val/id_top1", "val/id_top5", "val/id_cosine", "val/exp_l2", "val/exp_sqrt_mse", "val/pose_deg")


def _command(devices: int, override: Path) -> list[str]:
    # one pair per process and step: 2 processes x 1, or 1 process accumulating 2 batches of 1
    accumulate = 2 // devices
    return [sys.executable, "-m", "ipsb", "fit", "--config", str(CONFIG), "--config", str(override),
            f"--trainer.devices={devices}", f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
            "--trainer.max_steps=2", f"--trainer.accumulate_grad_batches={accumulate}",
            f"--trainer.val_check_interval={accumulate}", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
            "--data.init_args.num_train_pairs=16", "--data.init_args.num_val_pairs=8",
            "--data.init_args.batch_size=1", "--data.init_args.val_batch_size=4",
            "--model.init_args.hidden_dim=16"]


def _logged(root: Path) -> dict[int, dict[str, float]]:
    files = list(root.glob("outputs/toy/mapping/logs/*/metrics.csv"))
    assert len(files) == 1, files
    out: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(open(files[0])):
        if row.get("val/fid"):
            out[int(row["step"])] = {n: float(row[n]) for n in NAMES}
    return out


@pytest.mark.ddp
def test_two_processes_log_the_callback_values_of_one(tmp_path):
    override = tmp_path / "callbacks.yaml"
    override.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "ipsb.callbacks.swap_evaluation.SwapEvaluation",
         "init_args": {"every_n_val_runs": 1, "num_pairs": 7, "batch_size": 3}}]}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    runs = {}
    for devices in (1, 2):
        root = tmp_path / f"devices{devices}"
        save_oracle_basis(root / "outputs" / "toy" / "basis.pt")        # where the config looks (cwd-relative)
        runs[devices] = (root, subprocess.Popen(_command(devices, override), cwd=root, env=env, text=True,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    logged = {}
    for devices, (root, proc) in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:] + err[-5000:]
        logged[devices] = _logged(root)
    one, two = logged[1], logged[2]
    assert sorted(one) == sorted(two) == [1, 2]                      # measured after both validation runs
    worst = 0.0
    for step in one:
        for name in NAMES:
            a, b = one[step][name], two[step][name]
            worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
            assert b == pytest.approx(a, rel=1e-6, abs=0), (step, name, a, b)
    print(f"largest relative difference 1 vs 2 processes: {worst:.2e}")
    assert one[1]["val/exp_l2"] != one[2]["val/exp_l2"]                # the stage trained in between
