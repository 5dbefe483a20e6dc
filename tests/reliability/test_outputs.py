"""Outputs are safe: checked before the compute (writable, room for a checkpoint), never two inputs to
one output, never an existing output replaced, and a full disk during a save leaves the previous file.

Read-only and full folders are simulated at the OS call (``tempfile.mkstemp`` refusing to create a
file, ``shutil.disk_usage`` reporting little free space, ``os.fsync`` failing with ENOSPC), since the
tests may run as root, whom permissions do not stop. "Before the compute" is asserted by making the
compute itself fail loudly if it is ever reached.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.hostile import CONFIGS, QUIET, TOY, assert_refused, snapshot

SMALL = ["--data.init_args.batch_size", "2", "--data.init_args.num_val_pairs", "2", "--data.init_args.val_batch_size",
         "2", "--trainer.val_check_interval", "2", "--trainer.callbacks.init_args.every_n_train_steps", "1", *QUIET]


def _no_compute(*args, **kwargs):
    raise AssertionError("the compute ran before the outputs were checked")


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: creating a file in ``folder`` fails with EACCES from now on."""
    folders: list[Path] = []
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and any(Path(dir).absolute() == f for f in folders):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda folder: folders.append(Path(folder).absolute())


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder, free)``: the file system of ``folder`` reports ``free`` bytes free."""
    folders: dict[Path, int] = {}
    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")

    def disk_usage(path):
        p = Path(path).absolute()
        for folder, free in folders.items():
            if p == folder or folder in p.parents or p in folder.parents:
                return usage(10 * free + 1, 9 * free + 1, free)
        return real(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    return lambda folder, free: folders.__setitem__(Path(folder).absolute(), free)


def _mapping_run(world, root: Path) -> list[str]:
    """A toy mapping fit in ``root`` (oracle basis, 32 px backbone) as ``ipsb fit`` arguments."""
    (root / "outputs" / "toy").mkdir(parents=True, exist_ok=True)
    shutil.copy(world["basis_file"], root / "outputs" / "toy" / "basis.pt")
    return ["fit", "--config", TOY / "mapping.yaml", "--model.init_args.backbone", world["backbone"], *SMALL]


# ---------------------------------------------------------------------------------------------- plans
def test_swap_refuses_two_targets_with_one_output(world, tmp_path, ipsb, swap_args):
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        Image.new("RGB", (32, 32), (90, 90, 90)).save(targets / name)
    out = tmp_path / "swapped"
    args = swap_args(out)
    args[args.index("--target") + 1] = targets
    before = snapshot(tmp_path)
    res = ipsb(*args)
    assert_refused(res, "swap", targets / "a.jpg", targets / "a.png", out / "a.png", before=before, roots=(tmp_path,))
    assert not out.exists()


def test_align_refuses_two_inputs_with_one_output(tmp_path, ipsb):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "a.jpg"):
        Image.new("RGB", (32, 32)).save(folder / name)
    res = ipsb("align", folder, "--out", tmp_path / "aligned")
    assert_refused(res, "align", folder / "a.jpg", folder / "a.png", "would both be written")
    assert not (tmp_path / "aligned").exists()


def test_swap_and_align_never_replace_an_existing_output(world, tmp_path, ipsb, swap_args, monkeypatch):
    from ipsb.swap import FaceSwapper

    monkeypatch.setattr(FaceSwapper, "from_checkpoints", _no_compute)
    (tmp_path / "out.png").write_bytes(b"an earlier result")
    (tmp_path / "aligned").mkdir()
    (tmp_path / "aligned" / "face.json").write_text("{}")
    before = snapshot(tmp_path)
    assert_refused(ipsb(*swap_args(tmp_path / "out.png")), "swap", tmp_path / "out.png", "--overwrite",
                   before=before, roots=(tmp_path,))
    assert_refused(ipsb("align", world["image"], "--out", tmp_path / "aligned"), "align",
                   tmp_path / "aligned" / "face.json", "--overwrite", before=before, roots=(tmp_path,))


# ---------------------------------------------------------------------------------------------- read-only
def test_swap_checks_its_output_folder_before_building_anything(world, tmp_path, ipsb, swap_args, read_only,
                                                                 monkeypatch):
    from ipsb.swap import FaceSwapper

    monkeypatch.setattr(FaceSwapper, "from_checkpoints", _no_compute)
    read_only(tmp_path / "ro")
    res = ipsb(*swap_args(tmp_path / "ro" / "out.png"))
    assert_refused(res, "swap", tmp_path / "ro", "Permission denied", "choose another folder")


def test_demo_checks_its_output_folder_before_training(tmp_path, ipsb, read_only, full_disk, monkeypatch):
    import ipsb.demo as demo

    monkeypatch.setattr(demo, "_fit", _no_compute)
    read_only(tmp_path / "ro")
    assert_refused(ipsb("demo", "--out", tmp_path / "ro", "--fast"), "demo", tmp_path / "ro", "Permission denied")
    full_disk(tmp_path / "full", 4096)
    line = assert_refused(ipsb("demo", "--out", tmp_path / "full", "--fast"), "demo", tmp_path / "full",
                          "not enough free space", "4.0 KiB free")
    assert "MiB needed" in line


@pytest.mark.parametrize("problem", ["read-only", "full"])
def test_fit_checks_the_checkpoint_folder_before_training(problem, world, tmp_path, ipsb, read_only, full_disk,
                                                          monkeypatch):
    from ipsb.stages.mapping_module import MappingModule

    monkeypatch.setattr(MappingModule, "training_step", _no_compute)
    args = _mapping_run(world, tmp_path)
    ckpts = tmp_path / "outputs" / "toy" / "mapping" / "checkpoints"
    if problem == "read-only":
        read_only(ckpts)
        words = ("Permission denied",)
    else:
        full_disk(ckpts, 1000)
        words = ("not enough free space for a checkpoint", "1000 bytes free")
    res = ipsb(*args, "--trainer.max_steps", "2", cwd=tmp_path)
    assert_refused(res, "fit", ckpts, *words)
    assert not list(ckpts.glob("*.ckpt"))


def test_basis_fit_checks_its_output_path_before_the_compute(world, tmp_path, ipsb, read_only, monkeypatch):
    from ipsb.stages.basis_module import BasisModule

    monkeypatch.setattr(BasisModule, "training_step", _no_compute)
    read_only(tmp_path / "ro")
    res = ipsb("fit", "--config", TOY / "basis.yaml", "--model.init_args.backbone", world["backbone"],
               "--model.init_args.output_path", tmp_path / "ro" / "basis.pt", "--data.init_args.num_samples", "2",
               *QUIET, cwd=tmp_path)
    assert_refused(res, "fit", tmp_path / "ro", "Permission denied")


def test_test_checks_the_table_folder_before_evaluating(tmp_path, ipsb, read_only, monkeypatch):
    from ipsb.eval.evaluator import EvaluationModule

    monkeypatch.setattr(EvaluationModule, "test_step", _no_compute)
    read_only(tmp_path / "tables")
    res = ipsb("test", "--config", CONFIGS / "eval" / "ffpp_toy.yaml", "--model.init_args.output_dir",
               tmp_path / "tables", cwd=tmp_path)
    assert_refused(res, "test", tmp_path / "tables", "Permission denied")


def test_predict_checks_the_w_plus_folder_before_inverting(world, tmp_path, ipsb, read_only, monkeypatch):
    from ipsb.inversion import InversionModule

    monkeypatch.setattr(InversionModule, "predict_step", _no_compute)
    (tmp_path / "photos").mkdir()
    world_image = Image.open(world["image"])
    world_image.save(tmp_path / "photos" / "00000.png")
    read_only(tmp_path / "codes")
    res = ipsb("predict", "--config", TOY / "invert.yaml", "--data.init_args.root", tmp_path / "photos",
               "--model.init_args.output", tmp_path / "codes" / "w.pt", cwd=tmp_path)
    assert_refused(res, "predict", tmp_path / "codes", "Permission denied")


# ---------------------------------------------------------------------------------------------- full disk
def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint(world, tmp_path, ipsb, monkeypatch):
    """ENOSPC at the fsync of the step-2 checkpoints: one line naming the folder; the step-1
    checkpoints stay whole and loadable; no temporary file is left."""
    real = os.fsync
    files = []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            files.append(fd)
            if len(files) > 2:                            # the two step-1 files (epoch=0-step=1, last) pass
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    res = ipsb(*_mapping_run(world, tmp_path), "--trainer.max_steps", "3", cwd=tmp_path)
    ckpts = tmp_path / "outputs" / "toy" / "mapping" / "checkpoints"
    assert_refused(res, "fit", ckpts, "no space left", "previous file, if any, is intact")
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=1.ckpt", "last.ckpt"]      # no .tmp left
    for name in ("epoch=0-step=1.ckpt", "last.ckpt"):
        assert torch.load(ckpts / name, map_location="cpu", weights_only=True)["global_step"] == 1
