"""The results table in the paper's layout: rows = methods, written as markdown and JSON.

FF++ columns: ID retrieval % (top-1, top-5), ID cosine, expression error (mean L2, ``sqrt(MSE*64)``),
pose error (degrees L2; pooled bins ``sqrt(MSE*66)/2``; ReliableSwap's raw-logit form, the mean over
yaw/pitch/roll of ``sqrt(MSE_a*66)/2``), and the preset. CelebA-HQ columns: FID, expression,
pose, ID similarity, ID retrieval % (top-1, top-5), preset. Every measured row names the metric
preset that produced it (:mod:`ipsb.eval.networks`; ``custom`` = no named preset) and fills only
the columns that preset defines.

The JSON holds the measured rows, the paper's numbers as reference rows with ``"source": "paper"``,
the preset, the sha256 of every evaluation network file, the manifest (path, file sha256,
``list_sha256``) and the run's settings. The paper's FF++ rows are comparable to the
``reliableswap`` preset (its conventions are those of the only public FF++ evaluation code, on which
the published FF++ tables rest; docs/evaluation.md): their expression and pose numbers sit under
that preset's columns and their preset cell says so. The paper's CelebA-HQ expression and pose
numbers do not state their form; they are shown under the L2 / degree columns. Both are marked
``†``. An existing table is never replaced unless ``overwrite`` is set.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from ipsb.data.output_plan import check_no_existing, write_atomic

#: (key, markdown header, decimals) per benchmark.
COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "ffpp": [("id_top1_pct", "ID ret. top-1 % ↑", 2), ("id_top5_pct", "ID ret. top-5 % ↑", 2),
             ("id_cosine", "ID cos ↑", 4), ("exp_l2", "Exp L2 ↓", 3), ("exp_sqrt_mse", "Exp √(MSE·E) ↓", 3),
             ("pose_deg", "Pose deg ↓", 3), ("pose_bin_sqrt_mse", "Pose √(MSE·66)/2 ↓", 3),
             ("pose_logit_l2", "Pose logits mean_a √(MSE_a·66)/2 ↓", 3)],
    "celebahq": [("fid", "FID ↓", 2), ("exp_l2", "Exp L2 ↓", 3), ("exp_sqrt_mse", "Exp √(MSE·E) ↓", 3),
                 ("pose_deg", "Pose deg ↓", 3), ("pose_bin_sqrt_mse", "Pose √(MSE·66)/2 ↓", 3),
                 ("pose_logit_l2", "Pose logits mean_a √(MSE_a·66)/2 ↓", 3),
                 ("id_cosine", "ID sim ↑", 4), ("id_top1_pct", "ID ret. top-1 % ↑", 2),
                 ("id_top5_pct", "ID ret. top-5 % ↑", 2)],
}

_P = "paper"
#: The paper's numbers (StyleIPSB, CVPR 2023, its FF++ and CelebA-HQ tables). FF++ rows: comparable to
#: the ``reliableswap`` preset (ID retrieval top-1, expression sqrt(MSE*64), pose from raw logits).
#: CelebA-HQ rows: form of expression / pose not stated.
PAPER_ROWS: dict[str, list[dict[str, Any]]] = {
    "ffpp": [
        {"method": m, "source": _P, "comparable_preset": "reliableswap", "id_top1_pct": r, "exp_sqrt_mse": e,
         "pose_logit_l2": p}
        for m, r, e, p in [("FaceSwap", 72.69, 2.89, 2.58), ("Deepfakes", 88.39, 3.33, 4.64),
                           ("FaceShifter", 90.68, 2.82, 2.55), ("MegaFS", 90.83, 2.92, 2.64),
                           ("FSLSD", 90.05, 2.79, 2.46), ("StyleIPSB", 95.05, 2.23, 3.58)]],
    "celebahq": [
        {"method": m, "source": _P, "fid": f, "exp_l2": e, "pose_deg": p, "id_cosine": s}
        for m, f, e, p, s in [("MegaFS", 22.03, 2.85, 0.043, 0.4837), ("RAFS", 13.25, 3.15, None, 0.5232),
                              ("FSLSD", 10.01, 2.99, 0.053, 0.4761), ("StyleIPSB", 9.37, 2.75, 0.078, 0.5378),
                              ("StyleIPSB ablation: no basis", 26.06, 3.73, 0.074, 0.65),
                              ("StyleIPSB ablation: with basis", 22.15, 3.37, 0.078, 0.67)]],
}
PAPER_FORM_KEYS = ("exp_l2", "exp_sqrt_mse", "pose_deg", "pose_logit_l2")
FOOTNOTES = {
    "ffpp": "† paper rows come from the paper, not from this run; they are comparable to the `reliableswap` preset "
            "(the conventions of the only public FF++ evaluation code, docs/evaluation.md) and sit under its "
            "columns: ID retrieval top-1, expression √(MSE·64), pose mean over yaw/pitch/roll of √(MSE_a·66)/2 of "
            "HopeNet's raw logits.",
    "celebahq": "† paper rows come from the paper, not from this run; it reports one expression and one pose number "
                "without stating the form; shown under the L2 / degree columns.",
}


def check_benchmark(benchmark: str) -> str:
    if benchmark not in COLUMNS:
        raise ValueError(f"benchmark must be one of {sorted(COLUMNS)}, got {benchmark!r}")
    return benchmark


def _cell(row: dict, key: str, decimals: int) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    text = f"{v:.{decimals}f}"
    return text + "†" if row.get("source") == _P and key in PAPER_FORM_KEYS else text


def _preset_cell(row: dict) -> str:
    if row.get("source") == _P:
        return f"comparable to {row['comparable_preset']}" if row.get("comparable_preset") else "-"
    return str(row.get("preset") or "custom")


def to_markdown(table: dict) -> str:
    """The table dict (see :func:`build_table`) -> a markdown document."""
    bench = check_benchmark(table["benchmark"])
    cols = COLUMNS[bench]
    head = "| Method | Source | " + " | ".join(h for _, h, _ in cols) + " | Preset | N |"
    sep = "|" + "---|" * (len(cols) + 4)
    lines = [f"# {table['title']}", "", head, sep]
    for row in table["rows"] + table["reference_rows"]:
        n = row.get("num_items")
        lines.append(f"| {row['method']} | {row.get('source', 'measured')} | "
                     + " | ".join(_cell(row, k, d) for k, _, d in cols)
                     + f" | {_preset_cell(row)} | {'-' if n is None else n} |")
    lines += ["", FOOTNOTES[bench], ""]
    preset = table.get("networks", {}).get("preset")
    if preset:
        replaced = preset.get("replaced") or []
        lines += [f"Preset `{preset['name']}`: {preset['summary']}."
                  + (f" Networks replaced by the config: {', '.join(replaced)}." if replaced else ""), ""]
    for note in table.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "## Evaluation networks (sha256)", ""]
    for comp, files in sorted(table["networks"]["files"].items()):
        cls = table["networks"]["classes"].get(comp, "?")
        if not files:
            lines.append(f"- {comp}: {cls} (no file: built-in or randomly initialised weights)")
        for name, digest in sorted(files.items()):
            lines.append(f"- {comp}: {cls} `{name}` sha256 `{digest}`")
    man = table.get("manifest")
    if man:
        lines += ["", "## Evaluation list", "",
                  f"- manifest `{man.get('path')}` sha256 `{man.get('sha256')}` list_sha256 `{man.get('list_sha256')}`"]
        for k, v in sorted((man.get("counts") or {}).items()):
            lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def build_table(benchmark: str, rows: Sequence[dict], networks: dict, manifest: Optional[dict] = None,
                settings: Optional[dict] = None, notes: Sequence[str] = (), title: Optional[str] = None) -> dict:
    """Assemble the table dict: measured ``rows`` + the paper's reference rows + provenance."""
    bench = check_benchmark(benchmark)
    return {"benchmark": bench,
            "title": title or {"ffpp": "FaceForensics++", "celebahq": "CelebA-HQ"}[bench] + " face swapping",
            "columns": [k for k, _, _ in COLUMNS[bench]],
            "rows": [dict(r, source=r.get("source", "measured")) for r in rows],
            "reference_rows": [dict(r) for r in PAPER_ROWS[bench]],
            "networks": networks, "manifest": manifest, "settings": settings or {}, "notes": list(notes)}


def table_paths(output_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """``(<dir>/<name>.md, <dir>/<name>.json)``."""
    d = Path(output_dir)
    return d / f"{name}.md", d / f"{name}.json"


def check_writable(output_dir: str | os.PathLike, name: str, overwrite: bool,
                   how: str = "set overwrite: true") -> None:
    """:class:`~ipsb.data.output_plan.OutputExistsError` when a table of that name exists and
    ``overwrite`` is False (``how``: the caller's way to allow it, named in the message)."""
    check_no_existing(table_paths(output_dir, name), overwrite, how=f"{how}, or choose another output_dir / table_name")


def write_table(table: dict, output_dir: str | os.PathLike, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.json`` (atomically); returns their paths."""
    check_writable(output_dir, name, overwrite)
    md, js = table_paths(output_dir, name)
    md.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((js, json.dumps(table, indent=1, sort_keys=False)), (md, to_markdown(table))):
        write_atomic(path, lambda tmp, text=text: Path(tmp).write_text(text))
    return md, js
