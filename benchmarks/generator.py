"""Synthesis throughput and peak memory of the StyleGAN2 generator: eager vs ``torch.compile``.

``python benchmarks/generator.py [--quick] [--device cpu|cuda] [--reps N]``

Config-f widths (``channel_multiplier=2``), random weights, ``noise_mode='const'``, ``torch.no_grad``;
resolutions 256 and 1024, batch 1 and 4. Each row reports images/s (median over ``reps`` timed calls
after warm-up) and peak memory of one call: on CUDA ``torch.cuda.max_memory_allocated`` (weights
included), on CPU the peak resident-set growth during the call, sampled from ``/proc/self/statm``
every 2 ms (activations + workspace; the weights are already resident). The compiled rows are
compared with the eager row of the same configuration (``speedup`` column), in the same run.

``--quick`` (a few minutes on an idle 2-core CPU): 1 warm-up + 1 timed call per row, and
``torch.compile`` only at 256 px, batch 1 (compiling the 1024 graph, or recompiling for batch 4,
takes minutes on a CPU; the table says "skipped (--quick)"). Without ``--quick``: 2 warm-ups and
``--reps`` timed calls, compile everywhere. On a busy machine the numbers are noisy: compare the
rows of one run (the speedup column), not runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ipsb.backbone.stylegan2 import StyleGAN2Generator  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Context manager: peak memory (bytes) of the enclosed code on ``device``."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._base = _rss_bytes()
        self._max = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, _rss_bytes())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._max = max(self._max, _rss_bytes())
            self._stop.set()
            self._thread.join()
            self.peak = self._max - self._base
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, wplus: torch.Tensor, warmup: int, reps: int) -> tuple[float, float, float]:
    """(median seconds per timed call, seconds of the first call, peak memory bytes of the last
    timed call). ``warmup`` >= 1 untimed calls (the first one includes any compilation)."""
    device = wplus.device
    with torch.no_grad():
        t0 = time.perf_counter()
        fn(wplus)
        _sync(device)
        first = time.perf_counter() - t0
        for _ in range(warmup - 1):
            fn(wplus)
        _sync(device)
        times, peak = [], 0.0
        for i in range(reps):
            with PeakMemory(device) as pm:
                t = time.perf_counter()
                fn(wplus)
                _sync(device)
                times.append(time.perf_counter() - t)
            peak = pm.peak
    return statistics.median(times), first, peak


def run(args) -> list[dict]:
    """Measure every row, printing each as soon as it is done (see :func:`print_row`)."""
    device = torch.device(args.device)
    rows = _Rows()
    for res in (256, 1024):
        torch.manual_seed(0)
        g = StyleGAN2Generator(res, channel_multiplier=2).to(device).eval().requires_grad_(False)
        warmup, reps = (1, 1) if args.quick else (2, args.reps)
        compiled = None
        for batch in (1, 4):
            wplus = torch.randn(batch, g.num_ws, g.w_dim, device=device)
            sec, _, peak = time_calls(g.synthesis, wplus, warmup, reps)
            eager_ips = batch / sec
            rows.append(dict(res=res, batch=batch, mode="eager", ips=eager_ips, peak=peak, speedup=1.0,
                             note=f"{reps} reps"))
            if args.quick and (res == 1024 or batch > 1):
                rows.append(dict(res=res, batch=batch, mode="compile", note="skipped (--quick)"))
                continue
            try:
                if compiled is None:
                    compiled = torch.compile(g.synthesis)
                sec, first, peak = time_calls(compiled, wplus, warmup + 1, reps)
                rows.append(dict(res=res, batch=batch, mode="compile", ips=batch / sec, peak=peak,
                                 speedup=(batch / sec) / eager_ips, note=f"compile+1st call {first:.0f}s"))
            except Exception as e:  # inductor needs a C++/triton toolchain; report, don't crash
                rows.append(dict(res=res, batch=batch, mode="compile",
                                 note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:60]}"))
        del g, compiled
    return rows


HEAD = f"{'res':>5} {'batch':>5} {'mode':>8} {'images/s':>9} {'speedup':>8} {'peak MiB':>9}  note"


def print_header(device: str) -> None:
    print(f"StyleGAN2 synthesis (config-f widths, random weights), device={device}, "
          f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    print(HEAD)
    print("-" * len(HEAD), flush=True)


def print_row(r: dict) -> None:
    if "ips" in r:
        print(f"{r['res']:>5} {r['batch']:>5} {r['mode']:>8} {r['ips']:>9.3f} {r['speedup']:>7.2f}x "
              f"{r['peak'] / 2 ** 20:>9.0f}  {r['note']}", flush=True)
    else:
        print(f"{r['res']:>5} {r['batch']:>5} {r['mode']:>8} {'-':>9} {'-':>8} {'-':>9}  {r['note']}", flush=True)


class _Rows(list):
    """A list of table rows that prints each row when it is appended."""

    def append(self, row: dict) -> None:
        super().append(row)
        print_row(row)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 warm-up + 1 timed call; torch.compile only at 256 px, batch 1")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=5, help="timed calls per row (ignored with --quick)")
    args = p.parse_args(argv)
    print_header(args.device)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
