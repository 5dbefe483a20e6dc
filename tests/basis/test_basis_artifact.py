"""The Basis artifact: coords/apply, restrict, save/load round trip and its errors."""
from __future__ import annotations

import pytest
import torch

from ipsb.basis.artifact import Basis
from ipsb.basis.layers import layer_mask
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError


def _basis(num_ws=5, w_dim=4, k=(2, 3)):
    mask = layer_mask("1..3", num_ws)
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(int(mask.sum()) * w_dim, sum(k), generator=g, dtype=torch.float64))
    v = torch.zeros(num_ws, w_dim, sum(k), dtype=torch.float64)
    v[mask] = q.reshape(int(mask.sum()), w_dim, -1)
    return Basis(v.reshape(num_ws * w_dim, -1).float(), {"pose": (0, k[0]), "exp": (k[0], sum(k))},
                 {"pose": torch.tensor([3.0, 1.0]), "exp": torch.tensor([5.0, 2.0, 1.0])},
                 {"pose": 0.9, "exp": 0.8}, mask, num_ws, w_dim, "ab" * 32, {"layers": "1..3"})


def test_basis_coords_apply_roundtrip():
    b = _basis()
    c = torch.randn(4, b.num_directions)
    w = torch.randn(4, 5, 4)
    w2 = b.apply(w, c)
    torch.testing.assert_close(b.coords(w2 - w), c, atol=1e-5, rtol=0)
    assert (w2 - w)[:, ~b.layer_mask].abs().max() == 0          # layers outside the mask never move
    with pytest.raises(ValueError, match=r"\[B,5,4\]"):
        b.coords(torch.zeros(2, 6, 4))
    with pytest.raises(ValueError, match="coordinates"):
        b.apply(w, torch.zeros(4, 3))
    r = b.restrict(["exp"])
    assert r.num_directions == 3 and r.groups == {"exp": (0, 3)}
    torch.testing.assert_close(r.V, b.V[:, 2:])
    with pytest.raises(ValueError, match="unknown basis group"):
        b.restrict(["light"])


def test_basis_save_load(tmp_path):
    b = _basis()
    path = b.save(tmp_path / "sub" / "basis.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "ipsb.basis"
    b2 = Basis.load(path)
    torch.testing.assert_close(b2.V, b.V)
    assert b2.groups == b.groups and b2.generator_sha256 == b.generator_sha256 and b2.config == b.config
    assert torch.equal(b2.layer_mask, b.layer_mask)
    torch.testing.assert_close(b2.eigenvalues["exp"], b.eigenvalues["exp"])
    assert b2.explained_energy == b.explained_energy
    with pytest.raises(FileExistsError, match="overwrite"):
        b.save(path)
    b.restrict(["pose"]).save(path, overwrite=True)
    assert Basis.load(path).num_directions == 2


def test_basis_load_errors(tmp_path):
    with pytest.raises(MissingCheckpointError, match="nope.pt"):
        Basis.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CorruptCheckpointError, match="bad.pt"):
        Basis.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CorruptCheckpointError, match="not an ipsb basis"):
        Basis.load(other)
    state = _basis().state_dict()
    state["V"] = state["V"][:-1]
    torch.save(state, other)
    with pytest.raises(CorruptCheckpointError, match="inconsistent"):
        Basis.load(other)
