"""2-process DDP (CPU, gloo) gives the 1-process table: 9 pair items and 9 gallery frames on 2 ranks
(batch 2) make the DistributedSampler pad, which the metrics' de-duplication must undo."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness_ddp_run import N_FRAMES, N_VIDEOS, run
from ipsb.data.toy_ffpp import build_toy_ffpp

HERE = Path(__file__).resolve().parent


@pytest.mark.ddp
@pytest.mark.slow   # ~50 s on 2 busy cores (two Lightning processes); metric-level DDP exactness is in the default run
def test_ffpp_harness_two_processes_match_one(tmp_path):
    tree = build_toy_ffpp(tmp_path / "ffpp", N_VIDEOS, N_FRAMES, seed=0)
    run(str(tree), 1, str(tmp_path / "one"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "harness_ddp_run.py"), str(tree), "2", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "t.json").read_text())
    two = json.loads((tmp_path / "two" / "t.json").read_text())
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    assert len(one["rows"]) == len(two["rows"]) == 2
    for r1, r2 in zip(one["rows"], two["rows"]):
        assert r1["num_items"] == r2["num_items"] == 9
        for key, v in r1.items():
            if isinstance(v, float):
                assert r2[key] == pytest.approx(v, rel=1e-6, abs=1e-6), (r1["method"], key)
            else:
                assert r2[key] == v, (r1["method"], key)
