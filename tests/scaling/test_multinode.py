"""Two nodes x one process on localhost (``torchrun --nnodes 2``, gloo) give the results of one process.

What ``docs/scaling.md`` documents, run as a user types it: each "node" is ``python -m
torch.distributed.run --nnodes 2 --nproc-per-node 1 --node-rank R --master-addr 127.0.0.1
--master-port P -m ipsb ...`` with ``--trainer.num_nodes 2``, started side by side.

* ``ipsb fit`` of the toy mapping stage (32 px toy backbone, oracle basis): 3 steps at batch 4 per
  rank on 2 nodes end with the mapper weights of 3 steps at batch 8 in one process (the resumable
  sampler hands both the same 8 pairs per step; DDP averages the ranks' mean-loss gradients).
  Tolerance: 1e-4 relative (Frobenius) per weight tensor. Float32 sums in another order differ by
  ~1e-7, but Adam's first steps move every weight by about ``lr`` whatever its gradient's size, so a
  gradient entry at rounding level can move its weight differently (seen: 4e-5 on a few entries).
* ``lightning_configs/scaling/slurm.sbatch`` (2 nodes x 1 task, ``srun`` replaced by a script that
  starts the tasks here with SLURM's per-task variables): the same mapper as one process;
* ``ipsb test`` of the toy FF++ harness (``lightning_configs/eval/ffpp_toy.yaml``): the same table
  (every metric to 1e-6), ``world_size`` 2.

Slow (four Lightning processes and two reference runs: minutes on 2 busy cores).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers.blend_world import toy_backbone_yaml
from helpers.swap_world import save_oracle_basis

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "lightning_configs"

pytestmark = [pytest.mark.slow, pytest.mark.ddp]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(args: list[str], timeout: float = 600) -> None:
    proc = subprocess.run([sys.executable, "-m", "ipsb", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]


def run_two_nodes(args: list[str], timeout: float = 900) -> None:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank {0,1}`` on localhost, both at once."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "ipsb", *args, "--trainer.num_nodes", "2", "--trainer.devices", "1",
                               "--trainer.strategy", "ddp"], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {rank}:\n{out[-4000:]}"


def mapping_config(folder: Path, batch: int) -> Path:
    cfg = yaml.safe_load((CONFIGS / "toy" / "mapping.yaml").read_text())
    t = cfg["trainer"]
    t.update(max_steps=3, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
             default_root_dir=str(folder / "run"),
             callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                         "init_args": {"dirpath": str(folder / "checkpoints"), "save_last": True, "save_top_k": 0,
                                       "every_n_train_steps": 3}}])
    t.pop("val_check_interval", None)
    m = cfg["model"]["init_args"]
    m.update(backbone=str(toy_backbone_yaml(folder / "toy32.yaml")), basis=str(save_oracle_basis(folder / "basis.pt")),
             hidden_dim=32)
    cfg["data"]["init_args"].update(batch_size=batch, num_train_pairs=64, num_val_pairs=2, val_batch_size=2)
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def one_process_mapping(tmp_path_factory) -> Path:
    one = tmp_path_factory.mktemp("one")
    run_one(["fit", "--config", str(mapping_config(one, batch=8))])
    return one / "checkpoints" / "last.ckpt"


def assert_same_mapping(one: Path, two: Path) -> None:
    a = torch.load(one, map_location="cpu", weights_only=False)
    b = torch.load(two, map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 3
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys() and sa                # the trainable mapper (the backbone is never saved)
    for key in sa:
        diff = float((sa[key] - sb[key]).norm() / sa[key].norm().clamp_min(1e-12))
        assert diff <= 1e-4, (key, diff)


def test_two_nodes_mapping_fit_matches_one_process(tmp_path, one_process_mapping):
    run_two_nodes(["fit", "--config", str(mapping_config(tmp_path, batch=4))])
    assert_same_mapping(one_process_mapping, tmp_path / "checkpoints" / "last.ckpt")


FAKE_SRUN = """#!/bin/bash
# srun on one machine: one process per task, with the per-task variables SLURM sets
pids=()
for ((r = 0; r < SLURM_NTASKS; r++)); do
  SLURM_PROCID=$r SLURM_LOCALID=$((r % SLURM_NTASKS_PER_NODE)) SLURM_NODEID=$((r / SLURM_NTASKS_PER_NODE)) "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


def test_slurm_script_on_two_nodes_matches_one_process(tmp_path, one_process_mapping):
    """``lightning_configs/scaling/slurm.sbatch`` as sbatch runs it on 2 nodes x 1 task, with an srun
    that starts the tasks on this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')     # this interpreter
    (bin_dir / "python").chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "ipsb", "SLURM_NNODES": "2", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1",
           "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(free_port())}
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.run(["bash", str(CONFIGS / "scaling" / "slurm.sbatch"), str(mapping_config(run, batch=4))],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert_same_mapping(one_process_mapping, run / "checkpoints" / "last.ckpt")


def ffpp_config(folder: Path, tree: Path) -> Path:
    cfg = yaml.safe_load((CONFIGS / "eval" / "ffpp_toy.yaml").read_text())
    cfg["trainer"].update(logger=False, default_root_dir=str(folder / "run"))
    m = cfg["model"]["init_args"]
    m.update(output_dir=str(folder), table_name="t")
    cfg["data"]["init_args"].update(root=str(tree), manifest_path=str(tree / "manifest_ToyRowSwap.json"))
    path = folder / "ffpp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_nodes_ffpp_evaluation_matches_one_process(tmp_path):
    one, two, tree = tmp_path / "one", tmp_path / "two", tmp_path / "ffpp"
    one.mkdir(), two.mkdir()
    run_one(["test", "--config", str(ffpp_config(one, tree))])          # also builds the toy FF++ tree
    run_two_nodes(["test", "--config", str(ffpp_config(two, tree))])
    t1, t2 = (json.loads((d / "t.json").read_text()) for d in (one, two))
    assert t1["settings"]["world_size"] == 1 and t2["settings"]["world_size"] == 2
    assert len(t1["rows"]) == len(t2["rows"]) >= 2
    for r1, r2 in zip(t1["rows"], t2["rows"]):
        assert r1["num_items"] == r2["num_items"] > 0
        for key, v in r1.items():
            if isinstance(v, float):
                assert r2[key] == pytest.approx(v, rel=1e-6, abs=1e-6), (r1["method"], key)
            else:
                assert r2[key] == v, (r1["method"], key)
