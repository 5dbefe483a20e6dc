"""``ipsb edit`` on the stand-in official checkpoints (rosinality StyleGAN2, e4e, Deep3D + BFM, IR-SE50, ...).

The same command as on the toy world, with ``--backbone`` pointing at the stand-ins' config: a
photograph aligned with dlib and inverted by the e4e stand-in, strips along basis directions. The
stand-ins' weights are deterministic, not trained, so the basis is a random orthonormal one on rows
3..7 and only the code path is under test: nothing in ``ipsb.editing`` may assume the toy world. The
Deep3D stand-in's output does not depend on its input, so an attribute strip (``yaw``) is refused
with one line saying so.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from ipsb.basis.artifact import Basis
from ipsb.basis.layers import layer_mask
from ipsb.cli import main
from ipsb.editing.grid import CAPTION, PAD


def test_edit_a_photo_on_the_standin_official_backbone(standin_checkpoints, tmp_path, capsys):
    pytest.importorskip("dlib")
    from skimage import data

    s = standin_checkpoints
    mask = layer_mask("3..7", s.num_ws)
    q, _ = torch.linalg.qr(torch.randn(int(mask.sum()) * s.w_dim, 5, generator=torch.Generator().manual_seed(0)))
    v = torch.zeros(s.num_ws, s.w_dim, 5)
    v[mask] = q.reshape(int(mask.sum()), s.w_dim, 5)
    basis = Basis(v.reshape(-1, 5), {"pose": (0, 2), "exp": (2, 4), "light": (4, 5)}, {}, {}, mask, s.num_ws,
                  s.w_dim).save(tmp_path / "basis.pt")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    out = tmp_path / "edit.png"
    rc = main(["edit", "--image", str(photo), "--backbone", str(s.backbone_yaml), "--basis", str(basis),
               "--along", "pose,light:0", "--range", "-1:1", "--steps", "2", "--measure-codes", "2",
               "--tile", "32", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] == (CAPTION + PAD) + 4 * (32 + CAPTION + PAD) + PAD      # input, pose:0, pose:1, light:0
    assert grid.shape[1] > 2 * 32                                                # photo (aligned) + inversion
    rc = main(["edit", "--seed", "0", "--backbone", str(s.backbone_yaml), "--basis", str(basis), "--along", "yaw",
               "--measure-codes", "2", "--out", str(tmp_path / "yaw.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "yaw does not vary" in err
