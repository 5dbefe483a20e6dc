"""A callback that stops a training process in its tracks, for kill-and-resume tests.

:class:`HangAfterStep` writes ``marker`` and then sleeps forever when batch ``step`` is about to
start, i.e. after the checkpoints of the steps before it were saved. The test then kills the process
with SIGKILL from outside, which is what a crash or an OOM killer does.
"""
from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback


class HangAfterStep(Callback):
    def __init__(self, step: int, marker: str):
        self.step, self.marker = int(step), marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            Path(self.marker).write_text(str(trainer.global_step))
            while True:
                time.sleep(1)
