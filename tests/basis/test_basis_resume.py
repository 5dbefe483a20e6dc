"""A basis run killed (SIGKILL) after half its samples and resumed with ``--ckpt_path last`` gives the
basis of an uninterrupted run, in one process and under DDP (2 CPU processes, gloo).

Each run is ``python -m ipsb fit --config <the toy basis config, made small>`` in a subprocess: pose
group only (3 rows), ``identity_rows: sketch:3`` (whose per-sample draws must also resume), 4 samples
of batch 1, a checkpoint every step. The first run hangs when the step after half the samples is
about to start (``HangAfterStep``: its checkpoints are on disk by then) and is killed from outside
with SIGKILL, like a crash; the second resumes it. Tolerance: subspace distance and relative
eigenvalue difference <= 1e-6 (float32 Jacobians of the same samples; the sums differ only in float64
summation order).
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
import yaml

from ipsb.basis.artifact import Basis
from ipsb.stages.basis_module import RESUME_KEY

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "lightning_configs" / "toy" / "basis.yaml"
SAMPLES = 4


def subspace_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    qa, qb = (torch.linalg.qr(x.double())[0] for x in (a, b))
    return float(torch.linalg.matrix_norm(qa @ qa.T - qb @ qb.T, ord=2))


def write_config(folder: Path, devices: int, hang_after: int | None = None, run: str = "run") -> Path:
    """The toy basis config, small, with every output under ``folder`` (the run's config.yaml under
    ``folder / run``)."""
    cfg = yaml.safe_load(CONFIG.read_text())
    trainer = cfg["trainer"]
    trainer.update(devices=devices, default_root_dir=str(folder / run), enable_progress_bar=False)
    if devices > 1:
        trainer["strategy"] = "ddp"
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(folder / "checkpoints"), "save_last": True, "save_top_k": 0,
                                "every_n_train_steps": 1}}]
    if hang_after is not None:
        callbacks.append({"class_path": "helpers.run_control.HangAfterStep",
                          "init_args": {"step": hang_after, "marker": str(folder / "hanging")}})
    trainer["callbacks"] = callbacks
    model = cfg["model"]["init_args"]
    model.update(backbone=str(REPO / "lightning_configs" / "backbone" / "toy.yaml"),
                 output_path=str(folder / "basis.pt"), groups={"pose": ["angle"]}, k={"pose": 2},
                 identity_rows="sketch:3")
    cfg["data"]["init_args"].update(num_samples=SAMPLES, batch_size=1)
    path = folder / ("hang.yaml" if hang_after is not None else "run.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    paths = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
            "IPSB_ALLOWED_PACKAGES": "helpers"}


def fit(config: Path, *extra: str, timeout: float = 240) -> None:
    proc = subprocess.run([sys.executable, "-m", "ipsb", "fit", "--config", str(config), *extra], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]


def fit_and_kill(config: Path, marker: Path, timeout: float = 240) -> None:
    """Start the run, wait until it hangs after its checkpoint, SIGKILL its whole process group."""
    proc = subprocess.Popen([sys.executable, "-m", "ipsb", "fit", "--config", str(config)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-4000:]}"
            assert time.monotonic() < deadline, "the run never reached the step it should hang at"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)      # rank 0 and the DDP processes it started
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Basis:
    folder = tmp_path_factory.mktemp("uninterrupted")
    fit(write_config(folder, devices=1))
    return Basis.load(folder / "basis.pt")


def check_resumed(folder: Path, reference: Basis, hang_after: int, devices: int) -> None:
    marker = folder / "hanging"
    fit_and_kill(write_config(folder, devices, hang_after), marker)
    assert not (folder / "basis.pt").exists()
    saved = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[RESUME_KEY]
    assert saved["done"].tolist() == list(range(SAMPLES // 2)) and saved["count"] == SAMPLES // 2
    # its own folder for config.yaml: Lightning's SaveConfigCallback refuses to replace the killed run's
    fit(write_config(folder, devices, run="resumed"), "--ckpt_path", "last")
    resumed = Basis.load(folder / "basis.pt")
    assert resumed.config["num_samples"] == reference.config["num_samples"] == SAMPLES
    assert resumed.config["identity_rows"] == "sketch:3"
    for g in reference.groups:
        assert subspace_distance(reference.group_vectors(g), resumed.group_vectors(g)) <= 1e-6
        torch.testing.assert_close(resumed.eigenvalues[g], reference.eigenvalues[g], rtol=1e-6, atol=0)


def test_basis_killed_after_half_resumes_to_the_same_basis(tmp_path, uninterrupted):
    check_resumed(tmp_path, uninterrupted, hang_after=SAMPLES // 2, devices=1)


@pytest.mark.ddp
def test_basis_killed_under_ddp_resumes_to_the_same_basis(tmp_path, uninterrupted):
    # 2 ranks, 2 samples each: after one step per rank half the samples are in the sums
    check_resumed(tmp_path, uninterrupted, hang_after=SAMPLES // 4, devices=2)


def test_basis_resume_refuses_other_sample_settings(tmp_path):
    """The checkpoint's sums were made with other settings: one clear error, not a mixed basis."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from basis_ddp_run import run

    def checkpoint():
        return ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0, every_n_train_steps=1)

    run(1, str(tmp_path / "a.pt"), num_samples=4, callbacks=[checkpoint()])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)[RESUME_KEY]
    assert saved["done"].tolist() == [0, 1, 2, 3] and saved["sums"]["id"].dtype == torch.float64
    with pytest.raises(ValueError, match=r"identity_rows='exact'.*identity_rows='sketch:2'"):
        run(1, str(tmp_path / "b.pt"), num_samples=4, callbacks=[checkpoint()],
            ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), identity_rows="sketch:2")
    # the same settings resume (nothing left to add) to the same basis
    again = run(1, str(tmp_path / "c.pt"), num_samples=4, callbacks=[checkpoint()],
                ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    first = Basis.load(tmp_path / "a.pt")
    for g in first.groups:
        torch.testing.assert_close(again.basis.eigenvalues[g], first.eigenvalues[g], rtol=1e-12, atol=0)
