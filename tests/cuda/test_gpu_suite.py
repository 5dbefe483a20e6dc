"""``benchmarks/gpu_suite.py --quick`` (its CPU mode) runs, prints every section, and writes only
under ``--out``."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.py"


def _snapshot() -> dict[str, int]:
    """mtime of every file under the folders a careless benchmark could write to."""
    out = {}
    for folder in ("ipsb", "lightning_configs", "benchmarks", "checkpoints"):
        for p in (REPO / folder).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                out[str(p)] = p.stat().st_mtime_ns
    return out


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SUITE), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_gpu_suite_quick_runs_every_section_and_writes_only_under_out(tmp_path):
    before = _snapshot()
    out = tmp_path / "suite"
    proc = _run("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = proc.stdout
    rows = {}
    for line in table.splitlines():
        m = re.match(r"^(synthesis|basis|stages|ffpp eval|swap video)\s+(.+?)\s{2,}(-|[\d.]+)\s+(\S+)", line)
        if m:
            rows[(m.group(1), m.group(2))] = math.nan if m.group(3) == "-" else float(m.group(3))
    sections = {s for s, _ in rows}
    assert sections == {"synthesis", "basis", "stages", "ffpp eval", "swap video"}, table
    names = " | ".join(n for _, n in rows)
    for what in ("eager float32", "bf16 autocast", "channels_last", "torch.compile", "identity_rows exact",
                 "identity_rows lowrank", "identity_rows sketch", "mapping 32-true", "detail 32-true",
                 "blend 32-true", "metric networks", "frames of 256 px"):
        assert what in names, (what, table)
    measured = [v for (s, n), v in rows.items() if "torch.compile" not in n]
    assert all(v > 0 and math.isfinite(v) for v in measured), table
    assert "1000-sample basis" in table and "min on one cpu device" in table
    assert _snapshot() == before                                   # nothing in the repository was touched
    assert (out / "basis.pt").is_file() and (out / "swapped.mp4").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["blend.ckpt", "detail.ckpt", "mapping.ckpt"]


def test_gpu_suite_refuses_a_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = _run("--quick", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
