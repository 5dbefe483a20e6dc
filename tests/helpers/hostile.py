"""Hostile files, and the checks every refused command must pass (``tests/reliability``).

* builders: :func:`payload` (a ``class_path: os.system`` config value), :func:`evil_pickle` (a torch
  file whose unpickling would run a command), :func:`damaged` (empty, truncated, not a checkpoint),
  :func:`tampered` (a stage checkpoint with replaced hyper-parameters);
* checks: :func:`assert_refused` (exit code 2, one line naming the file, the marker never appeared,
  nothing changed: :func:`snapshot`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "lightning_configs"
TOY = CONFIGS / "toy"
#: quiet LightningCLI runs
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def payload(marker: Path) -> dict:
    """A config value that would create ``marker`` if anything imported and called it."""
    return {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}


class Boom:
    """Pickles to ``os.system('touch <marker>')``: unpickling it runs the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_pickle(path: Path, marker: Path, legacy: bool = False, template: Optional[dict] = None) -> Path:
    """A torch file (zip, or the legacy format of HopeNet's snapshot) whose unpickling would create
    ``marker``; ``template``: the dict it otherwise holds."""
    obj = dict(template or {"weight": torch.zeros(2)})
    obj["extra"] = Boom(marker)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def damaged(path: Path, kind: str, good: Optional[Path] = None) -> Path:
    """``kind``: ``empty``, ``truncated`` (the first half of ``good``), ``text`` (no checkpoint at all)."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = Path(good).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("<html>404 Not Found</html>\n")
    else:
        raise ValueError(kind)
    return path


def tampered(src: Path, dst: Path, **hparams) -> Path:
    """A copy of stage checkpoint ``src`` with ``hparams`` merged into its hyper-parameters."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].update(hparams)
    torch.save(ckpt, dst)
    return dst


@dataclass
class Result:
    """A command's exit code and its non-empty stderr lines."""

    code: int
    lines: list[str]

    @property
    def line(self) -> str:
        return self.lines[-1] if self.lines else ""


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders): compare before and after a command."""
    out = {}
    for root in map(Path, roots):
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_refused(res: Result, command: str, *names, marker: Optional[Path] = None,
                   before: Optional[dict] = None, roots: tuple = ()) -> str:
    """Exit code 2 and exactly one stderr line ``ipsb <command>: error: ...`` naming each of ``names``;
    the ``marker`` never appeared; the files of ``before`` (a :func:`snapshot` of ``roots``) are
    unchanged. Returns the line."""
    assert res.code == 2, res
    assert len(res.lines) == 1, res.lines
    line = res.line
    assert line.startswith(f"ipsb {command}: error: "), line
    for name in names:
        assert str(name) in line, (str(name), line)
    if marker is not None:
        assert not Path(marker).exists(), f"the payload ran: {marker}"
    if before is not None:
        assert snapshot(*roots) == before, "an existing file changed"
    return line
