"""Source | target | swap image grids every N training steps (and once per validation), via the logger.

The LightningModule provides ``grid_images(batch) -> dict[str, Tensor]``: named columns, each
``[B,3,H,W]`` in [-1,1] (e.g. ``{"source", "target", "swap"}``, stage 2 adds ``"stage1"``). The
callback takes the first ``max_rows`` samples, lays them out one pair per row (torchvision's
``make_grid``) and hands the grid ``[3,H',W']`` in [0,1] to every logger of the trainer:

* ``WandbLogger``: ``log_image(key, [grid], step)``;
* ``TensorBoardLogger``: ``experiment.add_image(key, grid, step)``;
* anything else (CSV, none): a PNG ``<log_dir>/images/<key>_<step>.png``.

Only rank 0 logs; the images are computed under ``no_grad`` in the module's current mode.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image


def swap_grid(columns: dict[str, torch.Tensor], max_rows: int = 4) -> torch.Tensor:
    """Columns ``{name: [B,3,H,W] in [-1,1]}`` -> one grid ``[3,H',W']`` in [0,1], a pair per row."""
    if not columns:
        raise ValueError("no image columns to lay out")
    shapes = {tuple(v.shape[1:]) for v in columns.values()}
    if len(shapes) != 1:
        raise ValueError(f"all image columns need one [3,H,W] shape, got {sorted(shapes)}")
    rows = min(max_rows, min(v.shape[0] for v in columns.values()))
    cols = list(columns.values())
    tiles = torch.stack([c[:rows].detach().float().cpu() for c in cols], 1)   # [rows,ncol,3,H,W]
    tiles = ((tiles.flatten(0, 1) + 1) / 2).clamp(0, 1)
    return make_grid(tiles, nrow=len(cols), padding=2, pad_value=1.0)


class SwapImageGrid(Callback):
    """Log a grid of the module's ``grid_images(batch)`` every ``every_n_steps`` training steps.

    Args:
        every_n_steps: training-step period (0 disables training grids).
        max_rows: samples per grid.
        on_validation: also log one grid from the first validation batch of each validation run.
    """

    def __init__(self, every_n_steps: int = 100, max_rows: int = 4, on_validation: bool = True):
        if every_n_steps < 0 or max_rows < 1:
            raise ValueError(f"every_n_steps must be >= 0 and max_rows >= 1, got {every_n_steps}, {max_rows}")
        self.every_n_steps, self.max_rows, self.on_validation = int(every_n_steps), int(max_rows), on_validation
        self.saved: list[Path] = []

    def _log(self, trainer: Trainer, pl_module: LightningModule, batch: Any, key: str) -> None:
        if not hasattr(pl_module, "grid_images"):
            raise TypeError(f"{type(pl_module).__name__} has no grid_images(batch) method for SwapImageGrid")
        if trainer.global_rank != 0:
            return
        with torch.no_grad():
            grid = swap_grid(pl_module.grid_images(batch), self.max_rows)
        step = trainer.global_step
        written = False
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[grid], step=step)
                written = True
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(key, grid, step)
                written = True
        if not written:
            root = trainer.loggers[0].log_dir if trainer.loggers and trainer.loggers[0].log_dir else \
                trainer.default_root_dir
            path = Path(root) / "images" / f"{key.replace('/', '_')}_{step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid, path)
            self.saved.append(path)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._log(trainer, pl_module, batch, "train/swap_grid")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.on_validation and batch_idx == 0 and not trainer.sanity_checking:
            self._log(trainer, pl_module, batch, "val/swap_grid")
