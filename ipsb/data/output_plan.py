"""Checks a batch command runs on its (input, output) plan before any compute, so nothing is lost.

* :func:`check_distinct_outputs`: no two inputs map to one output (``a.png`` and ``a.jpg`` both
  becoming ``out/a.png``); names are compared case-insensitively, since on macOS and Windows
  ``A.png`` and ``a.png`` are one file.
* :func:`check_no_existing`: existing outputs are refused (:class:`OutputExistsError`) unless the user
  asked to overwrite.
* :func:`check_writable_folder`: the output folder exists (it is created) and a file can be created
  in it; the probe file is removed again.
* :func:`check_free_space`: the file system holding a folder has room for an estimated size
  (``shutil.disk_usage``; a cheap estimate such as a checkpoint's size, checked before the compute).
* :func:`check_output_folder`: both.

Each raises :class:`OutputPlanError` (a ValueError) with a one-line message naming the paths and what
to do. :func:`write_atomic` writes an output through a temporary file in its folder and a rename, so
an error (a full disk) or a kill never leaves a half-written file in its place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence


class OutputPlanError(ValueError):
    """A batch command's outputs are unsafe to write (clash, exist, or the folder is not writable)."""


class OutputExistsError(OutputPlanError, FileExistsError):
    """An output exists and the user did not ask to overwrite it."""


def check_distinct_outputs(jobs: Sequence[tuple[Path, Path]]) -> None:
    """``jobs`` = [(input, output)]: OutputPlanError naming the first two inputs that share an output."""
    seen: dict[str, Path] = {}
    for src, out in jobs:
        key = os.path.normcase(os.path.abspath(out)).casefold()
        if key in seen and Path(seen[key]).resolve() != Path(src).resolve():
            raise OutputPlanError(f"inputs '{seen[key]}' and '{src}' would both be written to '{out}'; "
                                  f"rename one of them or process them into different output folders")
        seen.setdefault(key, src)


def check_no_existing(outputs: Iterable[Path], overwrite: bool, limit: int = 3,
                      how: str = "pass --overwrite to replace") -> None:
    """OutputExistsError listing existing outputs (the first ``limit``) unless ``overwrite``; ``how``:
    the caller's way to allow it, named in the message."""
    if overwrite:
        return
    existing = [str(o) for o in outputs if Path(o).exists()]
    if existing:
        more = f" and {len(existing) - limit} more" if len(existing) > limit else ""
        raise OutputExistsError(f"output exists, not overwriting ({how}): {', '.join(existing[:limit])}{more}")


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


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_free_space(folder: Path, need_bytes: int, what: str = "the outputs") -> None:
    """OutputPlanError when the file system of ``folder`` (or of its nearest existing parent) has
    fewer than ``need_bytes`` free."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise OutputPlanError(f"not enough free space for {what} in '{folder}': about {_size(need_bytes)} needed, "
                              f"{_size(free)} free; free some space or choose another folder")


def check_output_folder(folder: Path, need_bytes: int = 0, what: str = "the outputs") -> None:
    """:func:`check_writable_folder` and :func:`check_free_space` (``need_bytes`` > 0) for ``folder``."""
    check_writable_folder(folder)
    if need_bytes > 0:
        check_free_space(folder, need_bytes, what)


def write_atomic(path: Path, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` into a temporary file next to ``path``, then rename it to ``path``; on an
    error the temporary file is removed and an existing ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
