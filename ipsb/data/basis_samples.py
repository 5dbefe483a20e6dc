"""Which W+ codes ``w0`` the basis averages over: seeded sample indices, sharded over DDP ranks.

The data are just indices ``0..num_samples-1``; :class:`~ipsb.stages.basis_module.BasisModule` turns
index ``i`` into ``w0`` (the generator's mapping of a z drawn from seed ``(seed, i)``, or row ``i`` of
a file of W+ inversions), so a sample does not depend on batch or rank. Each rank takes indices
``rank, rank + world, ...`` (an ``IterableDataset``, so Lightning does not add a
``DistributedSampler``, whose padding would count some samples twice) and pads its shard with
``valid = False`` entries so every rank runs the same number of steps (DDP's per-step buffer
broadcast needs that); the module skips padded entries.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from ipsb.data.latents import load_wplus_file


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedIndices(IterableDataset):
    """Yields ``{"index": long, "valid": bool}`` for this rank's shard, padded to equal length."""

    def __init__(self, num_samples: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples, self._rank, self._world = int(num_samples), rank, world_size

    def shard(self) -> list[tuple[int, bool]]:
        rank, world = _rank_world()
        rank = self._rank if self._rank is not None else rank
        world = self._world if self._world is not None else world
        per_rank = math.ceil(self.num_samples / world)
        mine = list(range(rank, self.num_samples, world))
        return [(i, True) for i in mine] + [(0, False)] * (per_rank - len(mine))

    def __iter__(self) -> Iterator[dict]:
        for i, valid in self.shard():
            yield {"index": torch.tensor(i, dtype=torch.long), "valid": torch.tensor(valid)}


class BasisSampleDataModule(LightningDataModule):
    """``num_samples`` basis samples in batches of ``batch_size`` (per rank).

    With ``wplus_path`` (a ``.pt`` file holding a W+ tensor ``[N,num_ws,w_dim]``, or a dict with a
    ``"wplus"`` entry) ``num_samples`` defaults to ``N``; otherwise samples are drawn from the
    generator by the module.
    """

    def __init__(self, num_samples: Optional[int] = None, batch_size: int = 4, wplus_path: Optional[str] = None):
        super().__init__()
        if num_samples is None and wplus_path is None:
            raise ValueError("give num_samples (samples drawn from the generator) or wplus_path (W+ inversions)")
        self.num_samples, self.batch_size, self.wplus_path = num_samples, int(batch_size), wplus_path
        self.wplus: Optional[torch.Tensor] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.wplus_path is not None and self.wplus is None:
            self.wplus = load_wplus_file(self.wplus_path)
            if self.num_samples is None:
                self.num_samples = self.wplus.shape[0]
            elif self.num_samples > self.wplus.shape[0]:
                raise ValueError(f"num_samples={self.num_samples} but '{self.wplus_path}' holds only "
                                 f"{self.wplus.shape[0]} W+ codes")

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(ShardedIndices(self.num_samples), batch_size=self.batch_size, num_workers=0)
