"""AtomicCheckpointIO: a failed save (simulated at the OS-call level) leaves the previous file intact
and no temporary file; a full disk ends in one line naming the folder; loads are weights-only."""
import errno
import os

import pytest
import torch

import ipsb.checkpoint_io as cio
from ipsb.checkpoint_io import AtomicCheckpointIO
from ipsb.checkpoints import CheckpointWriteError, MissingCheckpointError, UnsafeCheckpointError


def _state(v: float) -> dict:
    return {"state_dict": {"w": torch.full((64, 64), v)}, "global_step": int(v)}


def _fail(err):
    def boom(*args, **kwargs):
        raise err
    return boom


@pytest.mark.parametrize("call, err", [
    ("fsync", OSError(errno.ENOSPC, "No space left on device")),     # the disk fills up before the data is safe
    ("replace", OSError(errno.EIO, "Input/output error")),            # the rename itself fails
    ("fsync", KeyboardInterrupt()),                                    # interrupted mid-save
])
def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, call, err):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_state(1.0), target)
    before = target.read_bytes()
    monkeypatch.setattr(cio.os, call, _fail(err))
    with pytest.raises(type(err) if not isinstance(err, OSError) else CheckpointWriteError) as info:
        io.save_checkpoint(_state(2.0), target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    assert io.load_checkpoint(target)["global_step"] == 1
    if isinstance(err, OSError):
        msg = str(info.value)
        assert "\n" not in msg and str(target.parent) in msg and "intact" in msg
        if err.errno == errno.ENOSPC:
            assert "no space left" in msg


def test_a_save_replaces_the_file_whole_and_loads_back(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "a" / "b.ckpt"
    io.save_checkpoint(_state(1.0), target)
    io.save_checkpoint(_state(3.0), target)
    assert io.load_checkpoint(target)["global_step"] == 3
    assert [p.name for p in target.parent.iterdir()] == ["b.ckpt"]
    with pytest.raises(MissingCheckpointError, match="nothere.ckpt"):
        io.load_checkpoint(tmp_path / "nothere.ckpt")


def test_loads_are_weights_only(tmp_path):
    marker = tmp_path / "MARKER"

    class Boom:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": {}, "x": Boom()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="evil.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_every_shipped_stage_config_uses_it():
    import yaml
    from pathlib import Path

    configs = Path(__file__).resolve().parent.parent / "lightning_configs"
    stages = [p for p in configs.rglob("*.yaml") if "stages." in p.read_text()]
    assert len(stages) == 8
    for p in stages:
        plugins = yaml.safe_load(p.read_text())["trainer"].get("plugins") or []
        assert {"class_path": "ipsb.checkpoint_io.AtomicCheckpointIO"} in plugins, p
