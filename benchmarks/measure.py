"""Timing helpers shared by the benchmarks: device synchronisation and peak memory of a block."""
from __future__ import annotations

import os
import threading
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU), so wall-clock times are the work's."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak extra memory (``peak_mib``) inside a ``with`` block: the CUDA allocator's peak over the
    block (tensors alive before it included), or on CPU the resident-set growth, sampled every 2 ms."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = torch.device(device), 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._base = self._peak = self._rss()
        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self._peak = max(self._peak, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mib = (max(self._peak, self._rss()) - self._base) / 2 ** 20
        return False
