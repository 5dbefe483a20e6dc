"""AtomicCheckpointIO: checkpoint saves that never leave a half-written file in place of a good one.

A save writes a temporary file *in the target folder* (so the final rename never crosses
filesystems), flushes and fsyncs it, then ``os.replace``-s it over the target (atomic on POSIX and
Windows) and fsyncs the folder. On any error the temporary file is removed and the previous
checkpoint stays untouched; a full disk or an unwritable folder ends in one
:class:`~ipsb.checkpoints.CheckpointWriteError` line naming the folder. Loads are always
weights-only, with every way a file can be unreadable named (:func:`ipsb.checkpoints.load_torch_file`).

Lightning's own ``TorchCheckpointIO`` buffers the checkpoint and writes it through fsspec's
transaction, whose commit moves a temporary file from the system temp folder; across filesystems
that is a copy, which a kill can interrupt half-way. Every shipped stage config selects this plugin
(``trainer.plugins: [{class_path: ipsb.checkpoint_io.AtomicCheckpointIO}]``).
"""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ipsb.checkpoints import CheckpointWriteError, MissingCheckpointError, load_torch_file

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError):
            if e.errno in _NO_SPACE:
                raise CheckpointWriteError(e.errno, f"cannot save checkpoint '{path.name}': no space left in "
                                                    f"'{folder}' (the previous file, if any, is intact); free "
                                                    f"space or point the checkpoint folder elsewhere") from e
            raise CheckpointWriteError(e.errno, f"cannot save checkpoint '{path.name}' in '{folder}': "
                                                f"{e.strerror or e} (the previous file, if any, is intact)") from e
        raise
    return path


def _fsync_folder(folder: Path) -> None:
    """Persist the rename (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` with atomic local saves and weights-only loads (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Callable] = None,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        """Weights-only load onto the CPU (Lightning then restores weights and optimizer state onto the
        training device); ``map_location`` and ``weights_only`` are accepted for the interface only."""
        if not Path(path).is_file():
            raise MissingCheckpointError(f"checkpoint '{path}' not found")
        return load_torch_file(path, "a training checkpoint", weights_only=True,
                               hint="Resume from another checkpoint of the run (e.g. an earlier step).")
