"""``ipsb edit`` through the command (``ipsb.cli.main``) on the toy world (32 px backbone YAML).

Mechanics: grids and animations are written with the expected layout, outputs are never replaced
without ``--overwrite``, bad input gets one line. The stage-1 checkpoint for ``--set`` /
``--transfer`` is the briefly trained one of the swapper tests (its quality is not under test here;
``test_editor.py`` checks edits against the ground truth).
"""
import av
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.blend_world import cached_checkpoints, toy_backbone_yaml
from ipsb.cli import main
from ipsb.editing.grid import CAPTION, PAD

TILE = 32


@pytest.fixture(scope="module")
def setup(toy_basis_file, tmp_path_factory):
    _, basis = toy_basis_file
    root = tmp_path_factory.mktemp("edit_cli")
    return {"basis": str(basis), "backbone": str(toy_backbone_yaml(root / "toy32.yaml", 32)), "root": root}


def _common(setup):
    return ["--basis", setup["basis"], "--backbone", setup["backbone"], "--measure-codes", "4", "--tile", str(TILE)]


def test_edit_along_the_basis_writes_a_labelled_grid_and_a_gif(setup, tmp_path, capsys):
    out, gif = tmp_path / "grid.png", tmp_path / "grid.gif"
    rc = main(["edit", "--seed", "3", "--along", "yaw,pose:0", "--range", "-1.5:1.5", "--steps", "3", "--out", str(out),
               "--animation", str(gif)] + _common(setup))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "yaw: basis group pose" in printed and str(out) in printed
    img = np.asarray(Image.open(out))
    rows = 3                                                   # input, yaw, pose:0
    assert img.shape[0] == (CAPTION + PAD) + rows * (TILE + CAPTION + PAD) + PAD
    with Image.open(gif) as g:
        assert g.n_frames == 4                                 # 3 cells forth, the middle one back
    # the yaw strip's cells differ: the face was edited (cells are TILE px, PAD apart, after the labels)
    y = (CAPTION + PAD) + PAD + (TILE + CAPTION + PAD)
    cells = [img[y:y + TILE, x - TILE:x] for x in range(img.shape[1] - PAD, 0, -(TILE + PAD))][:3]
    assert np.abs(cells[0].astype(int) - cells[2].astype(int)).mean() > 1.0


def test_edit_refuses_to_overwrite_and_says_so_in_one_line(setup, tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"keep me")
    rc = main(["edit", "--seed", "1", "--out", str(out)] + _common(setup))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and out.read_bytes() == b"keep me"
    assert len(err.splitlines()) == 1 and "--overwrite" in err


@pytest.mark.parametrize("extra, message", [
    (["--basis", "nowhere/basis.pt"], "basis file 'nowhere/basis.pt' not found"),
    (["--along", "smirk"], "--along 'smirk'"),
    (["--set", "yaw>20"], "--set 'yaw>20'"),
    (["--range", "1-2"], "--range must look like LO:HI"),
    (["--range", "-2:x"], "--range must look like LO:HI"),
    (["--transfer", "exp"], "--transfer needs --reference"),
    (["--wplus", "missing.pt"], "--wplus 'missing.pt' does not exist"),
])
def test_edit_bad_input_gets_one_clear_line(setup, tmp_path, capsys, extra, message):
    args = ["edit", "--out", str(tmp_path / "x.png")] + _common(setup) + extra
    if "--wplus" not in extra:
        args += ["--seed", "0"]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x.png").exists()


def test_edit_usage_errors_are_one_line_too(capsys):
    rc = main(["edit", "--seed", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--out" in err


def test_edit_photo_with_3dmm_control_and_transfer(setup, tmp_path, tmp_path_factory, toy32):
    ckpts = cached_checkpoints(tmp_path_factory)
    photo = tmp_path / "face.png"
    img = toy32.generator.synthesis(toy32.sample_wplus(1, seed=11, truncation_psi=0.7))[0]
    Image.fromarray(((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).resize((96, 96)).save(photo)
    out, mp4 = tmp_path / "control.png", tmp_path / "control.mp4"
    rc = main(["edit", "--image", str(photo), "--align", "center", "--invert-steps", "2", "--mapping",
               str(ckpts["mapping"]), "--set", "yaw+=20", "--set", "smile=0.3", "--steps", "3", "--out", str(out),
               "--animation", str(mp4)] + _common(setup))
    assert rc == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] == (CAPTION + PAD) + 4 * (TILE + CAPTION + PAD) + PAD   # input + 2 sets + "all"
    with av.open(str(mp4)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    # a W+ file as the face, expression and pose from a seed
    codes = tmp_path / "codes.pt"
    torch.save({"wplus": toy32.sample_wplus(2, seed=5, truncation_psi=0.7)}, codes)
    out2 = tmp_path / "transfer.png"
    rc = main(["edit", "--wplus", str(codes), "--index", "1", "--mapping", str(ckpts["mapping"]), "--transfer",
               "exp,pose", "--reference", "seed:7", "--steps", "2", "--out", str(out2)] + _common(setup))
    assert rc == 0
    grid = np.asarray(Image.open(out2))
    assert grid.shape[0] == (CAPTION + PAD) + 4 * (TILE + CAPTION + PAD) + PAD   # input, exp, pose, exp+pose
    assert grid.shape[1] > 3 * TILE                                             # reference + 2 cells


def test_edit_a_photograph_aligned_with_dlib(setup, tmp_path):
    """The default alignment (dlib landmarks + FFHQ crop, as ``ipsb swap``) on a real photo."""
    pytest.importorskip("dlib")
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    out = tmp_path / "astronaut_edit.png"
    rc = main(["edit", "--image", str(photo), "--invert-steps", "2", "--along", "pose:0", "--steps", "2",
               "--out", str(out)] + _common(setup))
    assert rc == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] == (CAPTION + PAD) + 2 * (TILE + CAPTION + PAD) + PAD      # input (photo, inversion), pose:0
