"""The editing benchmark and the basis ablation run end to end (slow: minutes on a shared CPU).

Smoke runs with tiny settings; the numbers in docs/results.md come from the full runs."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_editing_benchmark_quick_writes_table_and_plot(tmp_path, capsys):
    bench = _load("editing")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| yaw (10°) | StyleIPSB |" in printed and (tmp_path / "editing_drift.png").is_file()
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    oracle = results["oracle (ground truth)"]["yaw"][1]
    assert oracle["id_gt"] < 1e-3 and oracle["leak"] < 1e-2      # the ground-truth direction moves nothing else
    assert results["StyleIPSB"]["yaw"][1]["id_gt"] < results["InterfaceGAN"]["yaw"][1]["id_gt"]


@pytest.mark.slow
def test_basis_ablation_runs_and_summarises_over_seeds(tmp_path, capsys):
    bench = _load("basis_ablation")
    rc = bench.main(["--steps", "2", "--pairs", "8", "--seeds", "0", "1", "--arms", "basis", "free",
                     "--regimes", "small", "--small-pairs", "8", "--basis-samples", "2", "--out", str(tmp_path)])
    assert rc == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert set(summary["arms"]) == {"small/basis", "small/free"}
    assert summary["arms"]["small/basis"]["seeds"] == [0, 1]
    refs = summary["references"]["oracle swap (ground truth)"]
    assert refs["id_err_gt"] < 1e-3 and refs["exp_err_gt"] < 1e-3 and refs["pose_err_gt"] < 1e-2
    assert "identity only" in capsys.readouterr().out
