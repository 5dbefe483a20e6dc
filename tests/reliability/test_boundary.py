"""The error boundary itself: tracebacks only with ``--debug`` / ``IPSB_DEBUG=1``, bugs stay visible
as "internal error", argparse's usage errors stay argparse's, config errors show their root cause;
and, as real subprocesses, the exit code and the stderr a user sees (at most 3 lines).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.hostile import REPO, TOY, assert_refused, damaged


def test_debug_anywhere_on_the_command_line_shows_the_traceback(world, tmp_path, ipsb, swap_args):
    bad = damaged(tmp_path / "empty.ckpt", "empty")
    for args in (["--debug", *swap_args(tmp_path / "o.png", mapping=bad)], [*swap_args(tmp_path / "o.png", mapping=bad),
                                                                           "--debug"]):
        res = ipsb(*args)
        assert res.code == 2 and res.lines[0].startswith("Traceback (most recent call last)"), res.lines
        assert res.line.startswith("ipsb swap: error: ") and str(bad) in res.line and "empty" in res.line
        assert any("CorruptCheckpointError" in ln for ln in res.lines)


def test_ipsb_debug_environment_variable_shows_the_traceback(tmp_path, ipsb, monkeypatch):
    bad = damaged(tmp_path / "empty.ckpt", "empty")
    monkeypatch.setenv("IPSB_DEBUG", "1")
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--ckpt_path", bad, cwd=tmp_path)
    assert res.code == 2 and "Traceback (most recent call last)" in res.lines[0]
    assert res.line.startswith("ipsb fit: error: ") and str(bad) in res.line
    monkeypatch.setenv("IPSB_DEBUG", "0")
    assert_refused(ipsb("fit", "--config", TOY / "mapping.yaml", "--ckpt_path", bad, cwd=tmp_path), "fit", bad)


def test_an_unexpected_exception_is_an_internal_error_not_hidden(world, tmp_path, ipsb, swap_args, monkeypatch):
    from ipsb.swap import FaceSwapper

    def deep_inside_torch(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be ...")

    monkeypatch.setattr(FaceSwapper, "from_checkpoints", deep_inside_torch)
    res = ipsb(*swap_args(tmp_path / "out.png"))
    assert res.code == 1 and len(res.lines) == 1, res.lines
    assert res.line.startswith("ipsb swap: internal error: RuntimeError: CUDA error: an illegal memory access")
    assert "--debug" in res.line and "report" in res.line
    res = ipsb(*swap_args(tmp_path / "out.png"), "--debug")
    assert res.code == 1 and res.lines[0].startswith("Traceback") and "deep_inside_torch" in "\n".join(res.lines)


def test_argparse_usage_errors_stay_argparse_s(world, tmp_path, capsys):
    from ipsb.cli import main

    for args in (["swap", "--target", "x.png", "--out", "y.png"], ["align", "--out", str(tmp_path)],
                 ["demo", "--fast", "--tile", "big"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: ipsb ") and "error:" in err


@pytest.mark.parametrize("case", ["unknown-option", "bad-value", "missing-config", "broken-yaml"])
def test_lightning_command_line_and_config_errors_are_one_line(case, tmp_path, ipsb):
    (tmp_path / "broken.yaml").write_text("model:\n  class_path: [unclosed\n")
    args, words = {
        "unknown-option": (["--trainer.max_stepz", "3"], ["--trainer.max_stepz"]),
        "bad-value": (["--trainer.max_steps", "many"], ["trainer.max_steps", "many"]),
        "missing-config": (["--config", tmp_path / "nope.yaml"], ["nope.yaml"]),
        "broken-yaml": (["--config", tmp_path / "broken.yaml"], ["broken.yaml"]),
    }[case]
    base = [] if "config" in case or "yaml" in case else ["--config", TOY / "mapping.yaml"]
    line = assert_refused(ipsb("fit", *base, *args, cwd=tmp_path), "fit", *words)
    assert "Union" not in line and "usage:" not in line


def test_python_m_ipsb_exit_code_and_stderr(world, tmp_path):
    """As a user sees it: exit code 2, at most 3 lines on stderr (Lightning's own info lines
    included), the last naming the file; no traceback. Two commands run side by side: a config
    error found while building the stage (after Lightning's first info line), and ``ipsb swap``."""
    trunc = damaged(tmp_path / "truncated.ckpt", "truncated", world["mapping"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("IPSB_DEBUG", None)
    ipsb = [sys.executable, "-m", "ipsb"]
    cases = {
        "basis": (ipsb + ["fit", "--config", str(TOY / "mapping.yaml"), "--model.init_args.basis", "no_basis.pt",
                          "--model.init_args.backbone", str(world["backbone"])], "no_basis.pt"),
        "swap": (ipsb + ["swap", "--source", str(world["image"]), "--target", str(world["image"]), "--out",
                         str(tmp_path / "o.png"), "--mapping", str(trunc), "--detail", str(world["detail"]),
                         "--blend", str(world["blend"]), "--backbone", str(world["backbone"])], trunc),
    }
    procs = {k: subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (cmd, _) in cases.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 2, (name, err[-3000:])
        assert lines[-1].startswith(f"ipsb {cases[name][0][3]}: error: ") and str(cases[name][1]) in lines[-1], lines
        assert len(lines) <= 3 and "Traceback" not in err, (name, lines)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "outputs").exists()


def test_file_system_errors_from_libraries_and_memory_errors_are_one_line(tmp_path, ipsb, monkeypatch):
    """An OSError raised by a library (Lightning creating a log folder) names the path and what to
    do; running out of memory says what to lower. Both exit with code 2."""
    import io

    import torch

    from ipsb.error_boundary import report

    def raised(exc):
        try:
            raise exc
        except BaseException as e:   # noqa: BLE001 -- an exception with its traceback
            return e

    cases = {PermissionError(13, "Permission denied", str(tmp_path / "logs")): ("'" + str(tmp_path / "logs") + "'",
                                                                               "check its permissions"),
             OSError(28, "No space left on device", str(tmp_path / "x.ckpt")): ("no space left", "free some space"),
             torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"): ("out of memory",
                                                                                    "--data.init_args.batch_size")}
    for exc, words in cases.items():
        out = io.StringIO()
        assert report("fit", raised(exc), stream=out) == 2
        (line,) = out.getvalue().splitlines()
        assert line.startswith("ipsb fit: error: ") and all(w in line for w in words), line
