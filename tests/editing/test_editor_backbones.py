"""``ipsb edit``'s editor on a backbone that is not the toy world: tiny seeded StyleGAN-like stand-ins
(``tests/basis/basis_tiny.py``) with a face model that names no attributes, so only basis directions
and raw coefficients (``angle[0]``) are editable. Nothing in the editor may assume the toy world."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "basis"))
from basis_tiny import tiny_backbone  # noqa: E402

from ipsb.basis.artifact import Basis  # noqa: E402
from ipsb.basis.layers import layer_mask  # noqa: E402
from ipsb.editing.baselines import sefa  # noqa: E402
from ipsb.editing.editor import Editor, default_strips  # noqa: E402


def _random_basis(num_ws: int, w_dim: int) -> Basis:
    mask = layer_mask("1..3", num_ws)
    q, _ = torch.linalg.qr(torch.randn(int(mask.sum()) * w_dim, 5, generator=torch.Generator().manual_seed(0)))
    v = torch.zeros(num_ws, w_dim, 5)
    v[mask] = q.reshape(int(mask.sum()), w_dim, 5)
    return Basis(v.reshape(num_ws * w_dim, 5), {"pose": (0, 2), "exp": (2, 5)}, {}, {}, mask, num_ws, w_dim)


def test_editor_on_a_non_toy_backbone():
    torch.manual_seed(0)
    bb = tiny_backbone()
    gen = bb.generator
    basis = _random_basis(gen.num_ws, gen.w_dim)
    editor = Editor(bb, basis=basis, measure_codes=4, truncation_psi=1.0)
    assert default_strips(bb.face_model, basis) == ["exp:0", "exp:1"]       # no named attributes here
    w = bb.sample_wplus(1, seed=3)
    strip = editor.direction_strip(w, "exp:0", [-1.0, 0.0, 1.0])
    assert len(strip.images) == 3 and strip.images[0].shape == (3, gen.resolution, gen.resolution)
    assert not torch.allclose(strip.images[0], strip.images[2])
    assert editor.strip_names("pose") == ["pose:0", "pose:1"]
    codes, achieved, reached = editor.attribute_codes(w, editor.attribute("angle[0]"), [0.0, 0.02])
    assert bool(reached.all()) and abs(float(achieved[1]) - 0.02) < 2e-3
    assert codes[:, ~basis.layer_mask].sub(w[:, ~basis.layer_mask]).abs().max() == 0


def test_sefa_names_what_it_needs_for_an_unknown_generator():
    with pytest.raises(ValueError, match="SeFa needs the style"):
        sefa(tiny_backbone().generator, "1..3")
