"""BasisModule under Lightning: one process vs two DDP processes, sharding, no-overwrite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from basis_ddp_run import run
from ipsb.basis.artifact import Basis
from ipsb.data.basis_samples import ShardedIndices

HERE = Path(__file__).resolve().parent


def subspace_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spectral norm of the difference of the orthogonal projectors onto span(a), span(b)."""
    qa, qb = (torch.linalg.qr(x.double())[0] for x in (a, b))
    return float(torch.linalg.matrix_norm(qa @ qa.T - qb @ qb.T, ord=2))


def test_basis_shards_cover_samples_once():
    seen = []
    for rank in range(3):
        shard = ShardedIndices(7, rank, 3).shard()
        assert len(shard) == 3                      # equal steps on every rank
        seen += [i for i, valid in shard if valid]
    assert sorted(seen) == list(range(7))


def test_basis_module_single_process(tmp_path):
    out = tmp_path / "basis.pt"
    module = run(1, str(out))
    b = Basis.load(out)
    assert b.num_directions == 7 and list(b.groups) == ["pose", "exp", "light"]
    assert b.config["num_samples"] == 7
    torch.testing.assert_close(b.V.T @ b.V, torch.eye(7), atol=1e-5, rtol=0)
    assert not module.ddp_anchor.requires_grad or module.ddp_anchor.grad is None
    with pytest.raises(FileExistsError, match="overwrite"):
        run(1, str(out))


@pytest.mark.ddp
def test_basis_ddp_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    run(1, str(one))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "basis_ddp_run.py"), "2", str(two)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    b1, b2 = Basis.load(one), Basis.load(two)
    assert b2.config["num_samples"] == b1.config["num_samples"] == 7
    for g in b1.groups:
        d = subspace_distance(b1.group_vectors(g), b2.group_vectors(g))
        assert d <= 1e-6, (g, d)
        torch.testing.assert_close(b1.eigenvalues[g], b2.eigenvalues[g], rtol=1e-9, atol=0)


def test_basis_wplus_file_datamodule(tmp_path):
    from ipsb.data.basis_samples import BasisSampleDataModule
    from ipsb.data.latents import load_wplus_file
    from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError

    path = tmp_path / "inv.pt"
    torch.save({"wplus": torch.randn(5, 6, 4)}, path)
    dm = BasisSampleDataModule(wplus_path=str(path), batch_size=2)
    dm.setup()
    assert dm.num_samples == 5
    batches = list(dm.train_dataloader())
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="holds only 5"):
        BasisSampleDataModule(num_samples=9, wplus_path=str(path)).setup()
    with pytest.raises(MissingCheckpointError, match="missing.pt"):
        load_wplus_file(str(tmp_path / "missing.pt"))
    torch.save(torch.randn(5, 24), path)
    with pytest.raises(CorruptCheckpointError, match=r"\[N,num_ws,w_dim\]"):
        load_wplus_file(str(path))
    with pytest.raises(ValueError, match="num_samples"):
        BasisSampleDataModule()
