"""``ipsb predict --config lightning_configs/{toy/,}invert.yaml`` as a user runs it: killed with
SIGKILL part-way and run again, it writes the same W+ file as an uninterrupted run; on 2 CPU
processes (DDP, gloo) it writes the same file as on 1.

* toy world (default suite): 8 toy renders (64 px, aligned by construction), optimisation from the
  mean W (the toy backbone has no encoder);
* stand-in official checkpoints (slow): 8 real photographs (variants of scikit-image's astronaut),
  FFHQ-aligned on the fly with dlib, inverted by e4e plus 2 refinement steps. Generator renders of
  the stand-in weights are not faces dlib would find, so real photos are what exercises alignment.

"The same file" is byte for byte: codes are computed in fixed batches (same batch size), one thread
per process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.inversion_photos import astronaut_photos, toy_photos
from helpers.swap_world import toy_backbone

REPO = Path(__file__).resolve().parents[2]


def command(config: str, photos: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ipsb", "predict", "--config", str(REPO / config),
            "--data.init_args.root", str(photos), "--data.init_args.batch_size", "2",
            "--data.init_args.num_workers", "0", "--trainer.accelerator", "cpu", *extra]


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def run_and_kill(cmd: list[str], cwd: Path, env: dict, shards: Path, after: int) -> int:
    """Start ``cmd``, SIGKILL it once ``after`` shards exist; returns the number of finished shards."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900
        while len(list((cwd / shards).glob("*.pt"))) < after:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no shards appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    proc.stderr.close()
    return len(list((cwd / shards).glob("*.pt")))


def check_kill_resume_and_ddp(tmp_path: Path, cmd: list[str], output: str, env: dict, n_photos: int) -> dict:
    """Uninterrupted, killed + rerun, and 2-process runs; returns the uninterrupted file's content."""
    shards = Path(output + ".shards")
    run(cmd, tmp_path / "once", env)
    reference = (tmp_path / "once" / output).read_bytes()

    finished = run_and_kill(cmd, tmp_path / "killed", env, shards, after=2)
    assert 2 <= finished < n_photos // 2, f"killed after {finished} of {n_photos // 2} batches"
    assert not (tmp_path / "killed" / output).exists()
    run(cmd, tmp_path / "killed", env)                       # the same command again
    assert (tmp_path / "killed" / output).read_bytes() == reference
    assert not (tmp_path / "killed" / shards).exists()

    run(cmd + ["--trainer.devices", "2", "--trainer.strategy", "ddp"], tmp_path / "ddp", env)
    assert (tmp_path / "ddp" / output).read_bytes() == reference
    return torch.load(tmp_path / "once" / output, weights_only=True)


@pytest.mark.ddp
def test_toy_invert_killed_resumed_and_on_two_processes(tmp_path):
    bb = toy_backbone(64)
    codes = toy_photos(tmp_path / "photos", bb, n=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = command("lightning_configs/toy/invert.yaml", tmp_path / "photos", "--model.init_args.steps", "10")
    saved = check_kill_resume_and_ddp(tmp_path, cmd, "outputs/toy/toy_wplus.pt", env, n_photos=8)
    assert saved["wplus"].shape == codes.shape and saved["names"] == [f"{i:05d}.png" for i in range(8)]
    assert (tmp_path / "once" / "outputs/toy/toy_wplus.manifest.json").is_file()
    assert list((tmp_path / "killed" / "outputs/toy/invert_run/logs").glob("version_*/config.yaml"))


@pytest.mark.slow
@pytest.mark.ddp
def test_official_invert_of_real_photos_killed_resumed_and_on_two_processes(tmp_path, standin_checkpoints):
    photos = astronaut_photos(tmp_path / "photos", n=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "IPSB_CHECKPOINTS": str(standin_checkpoints.folder), "TORCH_HOME": str(tmp_path / "torch")}
    cmd = command("lightning_configs/invert.yaml", tmp_path / "photos", "--data.init_args.align", "true",
                  "--model.init_args.steps", "2")
    saved = check_kill_resume_and_ddp(tmp_path, cmd, "outputs/ffhq1024/e4e_ffhq_wplus.pt", env, n_photos=8)
    assert saved["names"] == sorted(p.name for p in photos)
    assert saved["wplus"].shape == (8, standin_checkpoints.num_ws, standin_checkpoints.w_dim)
