"""What the SwapEvaluation callback costs a toy mapping fit at the shipped intervals.

    python benchmarks/swap_evaluation.py [--steps 300] [--threads 1]

Two fits of ``lightning_configs/toy/mapping.yaml`` in this process, on CPU, the same in everything
(the config's backbone, data, optimizer, validation every ``val_check_interval`` steps, seed) except
that one attaches the config's SwapEvaluation (its ``every_n_val_runs``, ``num_pairs``,
``batch_size``) and the baseline attaches nothing: no image grids, no checkpoints, no logger in
either. ``--steps`` keeps the config's measurement density (with the shipped interval of 100 steps and
every 3rd validation run, 300 steps hold one measurement, as every 300 of the config's 1200 steps
do). The basis is the toy's ground truth (``benchmarks/stage1_toy.py``'s oracle), the config's
``outputs/toy/basis.pt`` is not needed.

Prints one table row per fit: wall and CPU time, measurements, the time spent inside the callback,
and the cost of the callback as the ratio of the two fits' CPU times (acceptance: at most 10 %). CPU
time of this process is the baseline-relative number to read on a shared machine (wall times move
with the neighbours' load); the time inside the callback, measured in the same run, cross-checks it.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "lightning_configs" / "toy" / "mapping.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))


class TimedSwapEvaluation:
    """Wraps a SwapEvaluation's ``measure`` to count the wall and CPU seconds spent in it."""

    def __init__(self, callback):
        self.callback, self.seconds, self.cpu_seconds, self.count = callback, 0.0, 0.0, 0
        inner = callback.measure

        def measure(*args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.cpu_seconds += time.process_time() - c
                self.count += 1

        callback.measure = measure


def fit(cfg: dict, steps: int, basis_path: Path, with_callback: bool, root: Path):
    """One toy mapping fit as the config defines it; returns (wall s, CPU s, TimedSwapEvaluation or None)."""
    from lightning.pytorch import Trainer, seed_everything

    from ipsb.callbacks.swap_evaluation import SwapEvaluation
    from ipsb.data.latents import LatentPairDataModule
    from ipsb.stages.base import adamw
    from ipsb.stages.mapping_module import MappingModule

    model = copy.deepcopy(cfg["model"]["init_args"])
    model["backbone"] = str(REPO / "lightning_configs" / "backbone" / "toy.yaml")
    model["basis"] = str(basis_path)
    opt = model.pop("optimizer")["init_args"]
    tr = cfg["trainer"]
    spec = next(c for c in tr["callbacks"] if c["class_path"].endswith("SwapEvaluation"))
    seed_everything(cfg["seed_everything"])
    module = MappingModule(**model, optimizer=adamw(opt["lr"], opt.get("weight_decay", 0.0)))
    timed = TimedSwapEvaluation(SwapEvaluation(**spec["init_args"])) if with_callback else None
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, val_check_interval=tr["val_check_interval"],
                      check_val_every_n_epoch=None, num_sanity_val_steps=0, deterministic=True, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[timed.callback] if timed else [], default_root_dir=str(root))
    dm = LatentPairDataModule(**cfg["data"]["init_args"])
    t, c = time.perf_counter(), time.process_time()
    trainer.fit(module, dm)
    return time.perf_counter() - t, time.process_time() - c, timed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps of each fit (config: 1200)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from stage1_toy import build_backbone, oracle_basis

    cfg = yaml.safe_load(CONFIG.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        basis = oracle_basis(build_backbone().generator).save(Path(tmp) / "basis.pt")
        base_wall, base_cpu, _ = fit(cfg, args.steps, basis, False, Path(tmp) / "base")
        wall, cpu, timed = fit(cfg, args.steps, basis, True, Path(tmp) / "cb")
    spec = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("SwapEvaluation"))["init_args"]
    print(f"\ntoy mapping fit, {args.steps} steps (batch {cfg['data']['init_args']['batch_size']}), validation every "
          f"{cfg['trainer']['val_check_interval']} steps; SwapEvaluation {spec}; {args.threads} thread(s)")
    head = (f"{'fit':<32}{'wall s':>8}{'CPU s':>8}{'measurements':>14}{'callback wall/CPU s':>21}"
            f"{'CPU vs baseline':>17}")
    print(head + "\n" + "-" * len(head))
    print(f"{'baseline: no callback':<32}{base_wall:>8.1f}{base_cpu:>8.1f}{0:>14}{'-':>21}{'1.000':>17}")
    print(f"{'with SwapEvaluation (shipped)':<32}{wall:>8.1f}{cpu:>8.1f}{timed.count:>14}"
          f"{f'{timed.seconds:.1f} / {timed.cpu_seconds:.1f}':>21}{cpu / base_cpu:>17.3f}")
    share = timed.cpu_seconds / cpu
    print(f"\ncallback cost: {100 * (cpu / base_cpu - 1):+.1f}% of the baseline fit's CPU time "
          f"(wall {100 * (wall / base_wall - 1):+.1f}%, noisy on a shared machine); {100 * share:.1f}% of the "
          f"run's CPU time was spent inside the callback; acceptance <= 10%: "
          f"{'PASS' if cpu / base_cpu <= 1.10 and share <= 0.10 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
