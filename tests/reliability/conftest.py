"""Hostile inputs run through the ``ipsb`` command (fixtures; the checks are in ``helpers.hostile``).

The files are built here: checkpoints whose hyper-parameters carry ``class_path: os.system``,
malicious pickles, empty / truncated / non-zip / wrong-kind files, odd images, clashing folders,
and output folders made read-only or full at the OS call (the tests may run as root, whom
``chmod`` does not stop). Every refused case asserts :func:`helpers.hostile.assert_refused`: the
marker file a payload would create never appears; exit code 2 and one line
``ipsb <command>: error: ...`` naming the file or option; existing files byte-identical.

Commands run in-process through :func:`ipsb.cli.main` with ``sys.argv`` as a user's and
Lightning's info lines at WARNING; ``test_boundary.py`` also runs some as real subprocesses.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Optional

import pytest

from helpers.blend_world import basis_module_checkpoint, cached_checkpoints, toy_backbone_yaml
from helpers.hostile import Result
from helpers.swap_world import save_oracle_basis
from ipsb.cli import main


@pytest.fixture
def ipsb(capsys, monkeypatch):
    """``ipsb(*args, cwd=None)`` -> :class:`~helpers.hostile.Result` of ``ipsb.cli.main(args)`` in-process."""

    def run(*args, cwd: Optional[Path] = None) -> Result:
        args = [str(a) for a in args]
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["ipsb"])            # as LightningCLI expects when given args
        with contextlib.chdir(cwd or Path.cwd()), warnings.catch_warnings(record=True):
            code = main(args)          # Python warnings are recorded (pytest's own capture may be off)
        return Result(code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()])

    return run


@pytest.fixture(autouse=True)
def quiet_lightning():
    """Lightning's info lines (seed, accelerator) at WARNING, as ``--trainer.enable_*`` quiet the rest."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    yield
    for lg, level in zip(loggers, levels):
        lg.setLevel(level)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    """Toy stage checkpoints (briefly trained, shared with the rest of the suite), a BasisModule
    checkpoint, the oracle basis, a 32 px toy backbone config and a plain image."""
    from PIL import Image

    out = dict(cached_checkpoints(tmp_path_factory))
    root = tmp_path_factory.mktemp("reliability_world")
    out["basis"] = basis_module_checkpoint(root)
    out["basis_file"] = save_oracle_basis(root / "basis.pt")
    out["backbone"] = toy_backbone_yaml(root / "toy32.yaml")
    out["image"] = root / "face.png"
    Image.new("RGB", (64, 64), (120, 90, 80)).save(out["image"])
    out["root"] = root
    return out


@pytest.fixture
def swap_args(world):
    """``swap_args(out, **files)`` -> ``ipsb swap`` arguments on the world's files; ``files`` replace
    ``mapping``, ``detail``, ``blend``, ``backbone`` or ``source``."""

    def args(out: Path, **files) -> list:
        f = {"mapping": world["mapping"], "detail": world["detail"], "blend": world["blend"],
             "backbone": world["backbone"], "source": world["image"], **files}
        return ["swap", "--source", f["source"], "--target", world["image"], "--out", out,
                "--mapping", f["mapping"], "--detail", f["detail"], "--blend", f["blend"],
                "--backbone", f["backbone"], "--invert-steps", "1", "--no-progress"]

    return args
