"""SwapImageGrid: grid layout and routing to W&B / TensorBoard / PNG (stand-in trainer and module)."""
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image

from ipsb.callbacks.image_grid import SwapImageGrid, swap_grid


class GridModule:
    def grid_images(self, batch):
        b = batch["n"]
        return {"source": -torch.ones(b, 3, 8, 8), "target": torch.zeros(b, 3, 8, 8), "swap": torch.ones(b, 3, 8, 8)}


def _trainer(loggers, step, tmp_path, rank=0):
    return SimpleNamespace(global_rank=rank, global_step=step, loggers=loggers, default_root_dir=str(tmp_path),
                           sanity_checking=False)


def test_grid_lays_out_one_pair_per_row_in_unit_range():
    cols = GridModule().grid_images({"n": 6})
    grid = swap_grid(cols, max_rows=2)
    assert grid.shape == (3, 2 * 10 + 2, 3 * 10 + 2)
    assert grid.min() >= 0 and grid.max() <= 1
    # row 0: source (black) | target (grey) | swap (white)
    assert grid[:, 2:10, 2:10].max() == 0 and torch.allclose(grid[:, 2:10, 12:20], torch.tensor(0.5))
    assert grid[:, 2:10, 22:30].min() == 1
    with pytest.raises(ValueError, match="one"):
        swap_grid({"a": torch.zeros(1, 3, 8, 8), "b": torch.zeros(1, 3, 4, 4)})


def test_png_for_csv_logger_every_n_steps(tmp_path):
    cb = SwapImageGrid(every_n_steps=5, max_rows=2)
    csv = CSVLogger(str(tmp_path), name="run")
    for step in range(11):
        cb.on_train_batch_end(_trainer([csv], step, tmp_path), GridModule(), None, {"n": 3}, step)
    assert [p.name for p in cb.saved] == ["train_swap_grid_0000000.png", "train_swap_grid_0000005.png",
                                          "train_swap_grid_0000010.png"]
    assert Image.open(cb.saved[0]).size == (32, 22)


def test_wandb_and_tensorboard_receive_the_grid_and_rank1_logs_nothing(tmp_path):
    wb, tb = MagicMock(spec=WandbLogger), MagicMock(spec=TensorBoardLogger)
    tb.experiment = MagicMock()
    cb = SwapImageGrid(every_n_steps=1)
    cb.on_train_batch_end(_trainer([wb, tb], 3, tmp_path), GridModule(), None, {"n": 2}, 0)
    wb.log_image.assert_called_once()
    assert wb.log_image.call_args.kwargs["key"] == "train/swap_grid" and wb.log_image.call_args.kwargs["step"] == 3
    tb.experiment.add_image.assert_called_once()
    assert tb.experiment.add_image.call_args.args[1].shape[0] == 3 and cb.saved == []
    wb2 = MagicMock(spec=WandbLogger)
    cb.on_train_batch_end(_trainer([wb2], 3, tmp_path, rank=1), GridModule(), None, {"n": 2}, 0)
    wb2.log_image.assert_not_called()
