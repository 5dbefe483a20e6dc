"""Output plan checks, and `ipsb swap`'s folder mode refusing two inputs that would write one output."""
from __future__ import annotations

import tempfile

import numpy as np
import pytest
from PIL import Image

from ipsb.cli import main
from ipsb.data.output_plan import (OutputPlanError, check_distinct_outputs, check_no_existing,
                                   check_writable_folder)


def test_distinct_outputs(tmp_path):
    a, b = tmp_path / "x" / "a.png", tmp_path / "y" / "a.jpg"
    check_distinct_outputs([(a, tmp_path / "o" / "a.png"), (b, tmp_path / "o" / "b.png")])
    check_distinct_outputs([(a, tmp_path / "o" / "a.png"), (a, tmp_path / "o" / "a.png")])  # same input
    with pytest.raises(OutputPlanError, match="a.png' and '.*a.jpg' would both be written to") as e:
        check_distinct_outputs([(a, tmp_path / "o" / "a.png"), (b, tmp_path / "o" / "a.png")])
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    with pytest.raises(OutputPlanError):  # one file on case-insensitive filesystems
        check_distinct_outputs([(a, tmp_path / "o" / "a.png"), (b, tmp_path / "o" / "A.PNG")])


def test_no_existing_and_writable(tmp_path, monkeypatch):
    outs = [tmp_path / f"{i}.png" for i in range(5)]
    check_no_existing(outs, overwrite=False)
    for o in outs:
        o.write_text("kept")
    with pytest.raises(OutputPlanError, match=r"--overwrite.*0\.png.*2\.png and 2 more"):
        check_no_existing(outs, overwrite=False)
    check_no_existing(outs, overwrite=True)
    check_writable_folder(tmp_path / "new" / "deep")
    assert (tmp_path / "new" / "deep").is_dir() and not list((tmp_path / "new" / "deep").iterdir())
    with pytest.raises(OutputPlanError, match="is a file"):
        check_writable_folder(outs[0])

    def full(*a, **k):  # a full disk, simulated at the OS call
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(OutputPlanError, match=r"cannot write to output folder '.*new'.*No space left"):
        check_writable_folder(tmp_path / "new")


def test_swap_folder_refuses_two_targets_with_one_output(tmp_path, capsys):
    """`ipsb swap` folder mode: a.png and a.jpg would both become out/a.png -> one line, nothing written
    (the plan is checked before any model is built, so no checkpoint is needed here)."""
    targets = tmp_path / "targets"
    targets.mkdir()
    img = np.full((32, 32, 3), 90, np.uint8)
    for name in ("a.png", "a.jpg", "b.png"):
        Image.fromarray(img).save(targets / name)
    Image.fromarray(img).save(tmp_path / "source.png")
    out = tmp_path / "swapped"
    code = main(["swap", "--source", str(tmp_path / "source.png"), "--target", str(targets), "--out", str(out)])
    assert code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(targets / "a.jpg") in err[0] and str(targets / "a.png") in err[0]
    assert "would both be written to" in err[0] and str(out / "a.png") in err[0]
    assert not out.exists()
