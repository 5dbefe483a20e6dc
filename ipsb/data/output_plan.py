"""Checks a batch command runs on its (input, output) plan before any compute, so nothing is lost.

* :func:`check_distinct_outputs`: no two inputs map to one output (``a.png`` and ``a.jpg`` both
  becoming ``out/a.png``); names are compared case-insensitively, since on macOS and Windows
  ``A.png`` and ``a.png`` are one file.
* :func:`check_no_existing`: existing outputs are refused unless the user asked to overwrite.
* :func:`check_writable_folder`: the output folder exists (it is created) and a file can be created
  in it; the probe file is removed again.

Each raises :class:`OutputPlanError` (a ValueError) with a one-line message naming the paths and what
to do.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence


class OutputPlanError(ValueError):
    """A batch command's outputs are unsafe to write (clash, exist, or the folder is not writable)."""


def check_distinct_outputs(jobs: Sequence[tuple[Path, Path]]) -> None:
    """``jobs`` = [(input, output)]: OutputPlanError naming the first two inputs that share an output."""
    seen: dict[str, Path] = {}
    for src, out in jobs:
        key = os.path.normcase(os.path.abspath(out)).casefold()
        if key in seen and Path(seen[key]).resolve() != Path(src).resolve():
            raise OutputPlanError(f"inputs '{seen[key]}' and '{src}' would both be written to '{out}'; "
                                  f"rename one of them or process them into different output folders")
        seen.setdefault(key, src)


def check_no_existing(outputs: Iterable[Path], overwrite: bool, limit: int = 3) -> None:
    """OutputPlanError listing existing outputs (the first ``limit``) unless ``overwrite``."""
    if overwrite:
        return
    existing = [str(o) for o in outputs if Path(o).exists()]
    if existing:
        more = f" and {len(existing) - limit} more" if len(existing) > limit else ""
        raise OutputPlanError(f"output exists, not overwriting (pass --overwrite to replace): "
                              f"{', '.join(existing[:limit])}{more}")


def check_writable_folder(folder: Path) -> None:
    """Create ``folder`` (with parents) and check a file can be created in it; else OutputPlanError."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPlanError(f"output folder '{folder}' is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".ipsb-write-check-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputPlanError(f"cannot write to output folder '{folder}': {e.strerror or e}; "
                              f"choose another folder") from e
