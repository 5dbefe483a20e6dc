"""``ipsb fit`` run as a user runs it, in the toy world, with steps and sizes shrunk on the command line
only: the stage configs work from any working directory, a run killed with SIGKILL resumes with
``--ckpt_path last`` to the same weights as an uninterrupted run (bit for bit), an accidental rerun
is refused with one line, and the basis reruns with ``--model.init_args.overwrite true``.

Path rule under test: references to other config files (``backbone: ../backbone/toy.yaml``) resolve
relative to the config that names them; data and output paths relative to the working directory.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.swap_world import TOY_BACKBONE, save_oracle_basis
from ipsb.cli import main

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "lightning_configs" / "toy"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL = ["--data.init_args.batch_size", "2", "--data.init_args.num_val_pairs", "2",
         "--data.init_args.val_batch_size", "2", "--trainer.callbacks.init_args.every_n_train_steps", "2", *QUIET]


def steps(n: int) -> list[str]:
    return ["--trainer.max_steps", str(n), "--trainer.val_check_interval", str(n)]


def fit(config, *extra: str) -> int:
    return main(["fit", "--config", str(config), *SMALL, *extra])


def error_lines(err: str) -> list[str]:
    """stderr without the warning LightningCLI gives when called in-process (its args next to pytest's)."""
    return [ln for ln in err.strip().splitlines() if "LightningCLI's args parameter" not in ln]


def last(root: Path, stage: str) -> dict:
    return torch.load(root / "outputs" / "toy" / stage / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread in-process, as in the subprocess (OMP_NUM_THREADS=1): same float reductions."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mapping_run(tmp_path_factory, one_thread) -> Path:
    """An uninterrupted 6-step toy mapping fit (oracle basis at outputs/toy/basis.pt) in its own folder."""
    root = tmp_path_factory.mktemp("run")
    save_oracle_basis(root / "outputs" / "toy" / "basis.pt")
    with contextlib.chdir(root):
        assert fit(TOY / "mapping.yaml", *steps(6)) == 0
    return root


def test_kill9_then_resume_from_last_equals_an_uninterrupted_run(mapping_run, tmp_path, capsys):
    (tmp_path / "outputs" / "toy").mkdir(parents=True)
    shutil.copy(mapping_run / "outputs" / "toy" / "basis.pt", tmp_path / "outputs" / "toy" / "basis.pt")
    paused = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "IPSB_ALLOWED_PACKAGES": "helpers", "OMP_NUM_THREADS": "1"}
    # the training process stops (sleeps) when step 5 would start, after the step-4 checkpoints were written
    cmd = [sys.executable, "-m", "ipsb", "fit", "--config", str(TOY / "mapping.yaml"), *SMALL, *steps(6),
           "--trainer.callbacks+=helpers.run_control.HangAfterStep", "--trainer.callbacks.init_args.step", "4",
           "--trainer.callbacks.init_args.marker", str(paused)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 600
        while not paused.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert paused.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "timeout"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpts = tmp_path / "outputs" / "toy" / "mapping" / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {"epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"}
    assert last(tmp_path, "mapping")["global_step"] == 4
    with contextlib.chdir(tmp_path):
        capsys.readouterr()
        assert fit(TOY / "mapping.yaml", *steps(6)) == 2               # a rerun is refused, in one line
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1 and "--ckpt_path last" in err[0] and "checkpoints" in err[0], err
        assert fit(TOY / "mapping.yaml", *steps(6), "--ckpt_path", "last") == 0
    resumed, full = last(tmp_path, "mapping"), last(mapping_run, "mapping")
    assert resumed["global_step"] == full["global_step"] == 6
    assert set(resumed["state_dict"]) == set(full["state_dict"])
    for k, v in full["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k                 # bit-exact
    for a, b in zip(full["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    # the resumed run kept the first run's config and saved its own next to it
    logs = tmp_path / "outputs" / "toy" / "mapping" / "logs"
    assert len(list(logs.glob("version_*/config.yaml"))) == 2


def test_toy_blend_config_from_the_repository_root_and_from_another_directory(mapping_run, tmp_path):
    root = mapping_run
    with contextlib.chdir(root):
        # optimizer and scheduler from the command line: lr 0.05, multiplied by 0.1 after every step
        assert fit(TOY / "detail.yaml", *steps(2), "--model.init_args.optimizer.init_args.lr", "0.05",
                   "--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.StepLR",
                   "--model.init_args.lr_scheduler.init_args.step_size", "1") == 0
    detail = last(root, "detail")
    assert detail["hyper_parameters"]["optimizer"]["init_args"]["lr"] == 0.05
    assert detail["hyper_parameters"]["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert detail["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.1 ** 2)
    with contextlib.chdir(root):
        (root / "lightning_configs").symlink_to(REPO / "lightning_configs")   # the repository's layout
        assert fit("lightning_configs/toy/blend.yaml", *steps(2)) == 0       # as typed in the README
    other = tmp_path / "elsewhere" / "work"
    for stage in ("mapping", "detail"):
        shutil.copytree(root / "outputs" / "toy" / stage, other / "outputs" / "toy" / stage)
    shutil.copy(root / "outputs" / "toy" / "basis.pt", other / "outputs" / "toy" / "basis.pt")
    with contextlib.chdir(other):
        assert fit(os.path.relpath(TOY / "blend.yaml"), *steps(2)) == 0
    a, b = last(root, "blend"), last(other, "blend")
    assert a["global_step"] == b["global_step"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    from ipsb.stages.blend_module import BlendModule

    with contextlib.chdir(other):                 # loads alone: backbone rebuilt from the stored config
        blend = BlendModule.load_from_checkpoint("outputs/toy/blend/checkpoints/last.ckpt")
    for k, v in blend.msft.state_dict().items():
        assert torch.equal(v, b["state_dict"]["msft." + k]), k


def test_basis_reruns_with_overwrite_and_builds_only_its_parts(tmp_path, capsys, monkeypatch):
    from ipsb.basis.artifact import Basis
    from ipsb.lightning_cli import run

    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path / "no_checkpoints"))
    cfg = yaml.safe_load(TOY_BACKBONE.read_text())
    cfg["init_args"]["encoder"] = {"class_path": "ipsb.backbone.encoder.load_e4e",
                                   "init_args": {"path_or_name": "e4e_ffhq_encode.pt"}}
    cfg["init_args"]["pose"] = {"class_path": "ipsb.backbone.pose.load_hopenet",
                                "init_args": {"checkpoint": "hopenet_robust_alpha1.pkl"}}
    (tmp_path / "backbone.yaml").write_text(yaml.safe_dump(cfg))
    args = ["fit", "--config", str(TOY / "basis.yaml"), "--data.init_args.num_samples", "2",
            "--data.init_args.batch_size", "2", *QUIET, "--model.init_args.backbone", "backbone.yaml"]
    with contextlib.chdir(tmp_path):
        cli = run(args)                                      # e4e and HopeNet files are absent: not needed
        assert cli.model.backbone.encoder is None and cli.model.backbone.pose is None
        assert {"encoder", "pose", "masker"} <= set(cli.model.hparams["backbone"]["init_args"])
        first = Basis.load("outputs/toy/basis.pt")
        capsys.readouterr()
        assert main(args) == 2
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1 and "--model.init_args.overwrite true" in err[0] and "basis_run" in err[0], err
        assert main(args + ["--model.init_args.overwrite", "true", "--model.init_args.seed", "1"]) == 0
        second = Basis.load("outputs/toy/basis.pt")
    assert not torch.equal(first.V, second.V)                  # replaced by the second run's basis
