"""``benchmarks/stage1_toy.py``'s ``fit`` returns the checkpoint it wrote, even when an earlier run's is there."""
import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "stage1_toy.py"


def test_fit_returns_this_runs_checkpoint_next_to_an_earlier_one(tmp_path):
    spec = importlib.util.spec_from_file_location("stage1_toy_fit", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from ipsb.stages.mapping_module import MappingModule

    backbone = bench.build_backbone()
    basis = bench.oracle_basis(backbone.generator).save(tmp_path / "basis.pt")
    paths = []
    for steps in (2, 3):          # the same folder twice: Lightning keeps last.ckpt and writes last-v1.ckpt
        module = MappingModule(backbone, basis=str(basis), mode="basis", hidden_dim=16, depth=1)
        paths.append(bench.fit(module, steps, 2, tmp_path / "mapping", seed=0))
    assert Path(paths[0]).name == "last.ckpt" and Path(paths[1]).name != "last.ckpt"
    assert torch.load(paths[1], weights_only=False, map_location="cpu")["global_step"] == 3
