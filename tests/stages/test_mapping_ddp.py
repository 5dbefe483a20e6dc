"""`ipsb fit --config lightning_configs/toy/mapping.yaml` on 2 CPU processes (DDP smoke test, 2 steps)."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.swap_world import save_oracle_basis

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ddp
def test_mapping_toy_config_runs_under_ddp_on_two_cpu_processes(tmp_path):
    save_oracle_basis(tmp_path / "outputs" / "toy" / "basis.pt")       # where the config looks (cwd-relative)
    cmd = [sys.executable, "-m", "ipsb", "fit", "--config", str(REPO / "lightning_configs/toy/mapping.yaml"),
           "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
           "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
           "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
           "--data.init_args.num_train_pairs=8", "--data.init_args.num_val_pairs=4",
           "--data.init_args.batch_size=2", "--data.init_args.val_batch_size=2",
           "--model.init_args.hidden_dim=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    metrics = list(tmp_path.glob("outputs/toy/mapping/logs/*/metrics.csv"))
    assert len(metrics) == 1, out.stderr[-3000:]
    rows = list(csv.DictReader(open(metrics[0])))
    assert any(r.get("val/exp_error") for r in rows) and any(r.get("train/loss_step") for r in rows)
    assert (tmp_path / "outputs/toy/mapping/logs").exists()
