"""``ipsb align`` through the command: folders, odd image modes, and outputs that are never lost
(same-stem inputs refused, existing outputs kept without --overwrite, unwritable folder found first)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")
skdata = pytest.importorskip("skimage.data")

from ipsb.cli import main  # noqa: E402
from ipsb.data import ffhq_alignment as fa  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("align_photos")
    Image.fromarray(skdata.astronaut()).save(root / "astronaut.png")
    return root


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_align_folder_through_python_m_ipsb(tmp_path, photos):
    """The documented folder form, as a user types it: a face is aligned, an empty file is skipped."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    (folder / "broken.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "ipsb", "align", str(folder), "--out", str(tmp_path / "out"),
                        "--size", "64"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr  # one input skipped
    assert f"skipped {folder / 'broken.jpg'}" in r.stderr and "empty" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut.json", "astronaut.png"]
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert record["size"] == 64 and record["transform_size"] == 256
    mapped = fa.apply_matrix(torch.tensor(record["matrix"], dtype=torch.float64),
                             torch.tensor(record["quad"], dtype=torch.float64))
    assert (mapped - fa.crop_corners(64)).abs().max() < 1e-6
    assert np.asarray(Image.open(tmp_path / "out" / "astronaut.png")).shape == (64, 64, 3)


def test_align_cmyk_jpeg_gives_the_rgb_crop(tmp_path, photos, capsys):
    Image.open(photos / "astronaut.png").convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert main(["align", str(photos / "astronaut.png"), str(tmp_path / "cmyk.jpg"), "--out", str(tmp_path / "out"),
                 "--size", "128"]) == 0
    rgb = np.asarray(Image.open(tmp_path / "out" / "astronaut.png")).astype(int)
    cmyk = np.asarray(Image.open(tmp_path / "out" / "cmyk.png")).astype(int)
    assert cmyk.shape == rgb.shape == (128, 128, 3)
    assert np.abs(cmyk - rgb).mean() < 6  # same colours (read as RGBA, C/M/Y came out as R/G/B)
    a, b = (json.loads((tmp_path / "out" / f"{n}.json").read_text())["landmarks"] for n in ("astronaut", "cmyk"))
    assert np.abs(np.array(a) - np.array(b)).mean() < 2


def test_align_refuses_two_inputs_with_one_output(tmp_path, photos, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(photos / "astronaut.png").save(folder / "a.png")
    Image.open(photos / "astronaut.png").save(folder / "a.jpg")
    out = tmp_path / "out"
    assert main(["align", str(folder), "--out", str(out)]) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("ipsb align: error:") and str(folder / "a.jpg") in line and str(folder / "a.png") in line
    assert not out.exists()  # refused before anything was created
    other = tmp_path / "other"
    other.mkdir()
    Image.open(photos / "astronaut.png").save(other / "A.PNG")  # same name in another folder, other case
    assert main(["align", str(folder / "a.png"), str(other / "A.PNG"), "--out", str(out)]) == 2
    (line,) = _stderr_lines(capsys)
    assert str(other / "A.PNG") in line and not out.exists()
    # the same file named twice is one input
    assert main(["align", str(folder / "a.png"), str(folder / "a.png"), "--out", str(out), "--size", "32"]) == 0


def test_align_keeps_existing_outputs_unless_overwrite(tmp_path, photos, capsys):
    out = tmp_path / "out"
    args = ["align", str(photos / "astronaut.png"), "--out", str(out)]
    assert main(args + ["--size", "64"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(args + ["--size", "32"]) == 2
    (line,) = _stderr_lines(capsys)
    assert "output exists" in line and "--overwrite" in line and str(out / "astronaut.png") in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(args + ["--size", "32", "--overwrite"]) == 0
    assert np.asarray(Image.open(out / "astronaut.png")).shape == (32, 32, 3)
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json", "astronaut.png"]  # no temporary left


def test_align_checks_the_output_folder_before_any_compute(tmp_path, photos, capsys, monkeypatch):
    import tempfile

    from ipsb.data import align

    def no_compute(*a, **k):
        raise AssertionError("the aligner must not run before the output folder is checked")

    monkeypatch.setattr(align.FaceAligner, "align", no_compute)
    real_mkstemp = tempfile.mkstemp

    def read_only(*a, dir=None, **k):  # a read-only folder, simulated at the OS call
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["align", str(photos / "astronaut.png"), "--out", str(tmp_path / "ro")]) == 2
    (line,) = _stderr_lines(capsys)
    assert "cannot write to output folder" in line and str(tmp_path / "ro") in line and "Permission denied" in line
    (tmp_path / "file").write_text("x")
    assert main(["align", str(photos / "astronaut.png"), "--out", str(tmp_path / "file")]) == 2
    (line,) = _stderr_lines(capsys)
    assert "is a file" in line and (tmp_path / "file").read_text() == "x"
    assert main(["align", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o2")]) == 2
    (line,) = _stderr_lines(capsys)
    assert "missing.png" in line and "does not exist" in line
