"""``benchmarks/swap_evaluation.py`` runs and prints its table (slow: two toy mapping fits)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_prints_the_cost_row():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "swap_evaluation.py"), "--steps", "3"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("with SwapEvaluation (shipped)"))
    assert row.split()[5] == "1"                      # one measurement: at the end of the 3 steps
    assert any(ln.startswith("callback cost:") for ln in lines)
