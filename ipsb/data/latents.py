"""Pairs of W+ codes ``(w_s, w_t)`` for stages 1 and 2, sampled from a generator or read from a file.

Every batch is ``{"w_s": [B,num_ws,w_dim], "w_t": [B,num_ws,w_dim], "index": [B] long}`` (float32,
on CPU; Lightning moves it). Source and target of a pair are always different codes.

* :class:`LatentPairDataModule` samples ``z ~ N(0,I)`` with seeded CPU generators, maps it with the
  generator's ``mapping`` (truncation ``psi`` towards ``mean_latent()``) and repeats ``w`` over the
  W+ rows. The generator is the one of the LightningModule being fitted (``trainer.lightning_module
  .backbone.generator``) unless one is passed in. Validation pairs are fixed by ``val_seed``.
* :class:`LatentFileDataModule` reads precomputed W+ codes (e.g. e4e inversions of FFHQ) from a
  ``.pt`` file holding a tensor ``[N,num_ws,w_dim]`` (or a dict with key ``"wplus"``); the last
  ``num_val_codes`` codes are held out for validation pairs.

Training order is resumable: a :class:`ResumableSampler` draws a permutation from ``(seed, epoch)``
and, when Lightning resumes mid-epoch from a checkpoint (``trainer.global_step`` not at an epoch
boundary), skips the batches already trained. Lightning's own mid-epoch resume needs a stateful
DataLoader whose state counts *prefetched* batches too; deriving the position from the restored
global step is exact and needs no extra state.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ipsb.checkpoints import (MissingCheckpointError, UnexpectedContentError, WrongCheckpointKindError,
                              describe_contents, load_torch_file)


class PairDataset(Dataset):
    """``codes [N,num_ws,w_dim]`` and index pairs ``[P,2]`` -> ``{"w_s", "w_t", "index"}`` items."""

    def __init__(self, codes: torch.Tensor, pairs: torch.Tensor):
        if codes.dim() != 3:
            raise ValueError(f"W+ codes must be [N,num_ws,w_dim], got {list(codes.shape)}")
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must be [P,2] indices, got {list(pairs.shape)}")
        self.codes, self.pairs = codes.float().contiguous(), pairs.long()

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, t = self.pairs[i]
        return {"w_s": self.codes[s], "w_t": self.codes[t], "index": torch.tensor(i)}


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffle (split over DDP ranks) that can start part-way into an epoch.

    ``position()`` returns ``(epoch, batches_done)`` at the moment iteration starts; the sampler
    permutes with ``seed + epoch`` and skips ``batches_done * batch_size`` of this rank's indices.
    Being a ``DistributedSampler``, Lightning leaves it in place under DDP.
    """

    def __init__(self, dataset: Dataset, seed: int, batch_size: int,
                 position: Callable[[], tuple[int, int]] = lambda: (0, 0)):
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        super().__init__(dataset, num_replicas=torch.distributed.get_world_size() if dist else 1,
                         rank=torch.distributed.get_rank() if dist else 0, shuffle=True, seed=seed,
                         drop_last=True)
        self.batch_size = int(batch_size)
        self.position = position

    def __iter__(self) -> Iterator[int]:
        epoch, done = self.position()
        self.set_epoch(epoch)
        indices = list(super().__iter__())
        return iter(indices[done * self.batch_size:])


def _distinct_pairs(n_codes: int, n_pairs: int, gen: torch.Generator, offset: int = 0) -> torch.Tensor:
    """``[n_pairs,2]`` random index pairs in ``[offset, offset+n_codes)`` with source != target."""
    if n_codes < 2:
        raise ValueError(f"need at least 2 W+ codes to make pairs, got {n_codes}")
    s = torch.randint(n_codes, (n_pairs,), generator=gen)
    shift = torch.randint(1, n_codes, (n_pairs,), generator=gen)
    return torch.stack([s, (s + shift) % n_codes], 1) + offset


@torch.no_grad()
def sample_wplus(generator, n: int, seed: int, truncation_psi: float = 1.0, chunk: int = 1024,
                 dtype: Optional[torch.dtype] = torch.float32) -> torch.Tensor:
    """``n`` W+ codes ``[n,num_ws,w_dim]`` on the CPU from seeded ``z`` through ``generator.mapping``, as
    ``dtype`` (None: the mapping's own)."""
    gen = torch.Generator().manual_seed(int(seed))
    z_dim = int(getattr(generator, "z_dim", generator.w_dim))
    z = torch.randn(n, z_dim, generator=gen)
    device = next((t.device for t in [*generator.parameters(), *generator.buffers()]), torch.device("cpu"))
    avg = generator.mean_latent() if truncation_psi != 1.0 else None
    out = []
    for i in range(0, n, chunk):
        w = generator.mapping(z[i:i + chunk].to(device), truncation_psi=truncation_psi, truncation_latent=avg)
        out.append((w if dtype is None else w.to(dtype)).cpu())
    w = torch.cat(out)
    if w.dim() == 2:
        w = w.unsqueeze(1).expand(-1, generator.num_ws, -1)
    return w.contiguous()


class _PairDataModule(LightningDataModule):
    """Shared loaders: ``self.train_set`` / ``self.val_set`` are :class:`PairDataset` after setup."""

    def __init__(self, batch_size: int, val_batch_size: int, seed: int, num_workers: int):
        super().__init__()
        if batch_size < 1 or val_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {val_batch_size}")
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size)
        self.seed, self.num_workers = int(seed), int(num_workers)
        self.train_set: Optional[PairDataset] = None
        self.val_set: Optional[PairDataset] = None

    def _position(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or self.train_set is None:
            return 0, 0
        world = trainer.world_size
        per_epoch = (len(self.train_set) // world) // self.batch_size
        if per_epoch < 1:
            return int(trainer.current_epoch), 0
        done = (trainer.global_step * trainer.accumulate_grad_batches) % per_epoch
        return int(trainer.current_epoch), int(done)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("call setup('fit') before asking for the training loader")
        if len(self.train_set) < self.batch_size:
            raise ValueError(f"{len(self.train_set)} training pairs are fewer than one batch of {self.batch_size}")
        sampler = ResumableSampler(self.train_set, self.seed, self.batch_size, self._position)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            raise RuntimeError("call setup() before asking for the validation loader")
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _module_generator(dm: LightningDataModule, explicit):
    if explicit is not None:
        return explicit
    trainer = getattr(dm, "trainer", None)
    model = getattr(trainer, "lightning_module", None) if trainer is not None else None
    backbone = getattr(model, "backbone", None)
    gen = getattr(backbone, "generator", None)
    if gen is None:
        raise ValueError("LatentPairDataModule needs a generator: pass generator=..., or fit a module whose "
                         "`backbone.generator` is set")
    return gen


class LatentPairDataModule(_PairDataModule):
    """(w_s, w_t) pairs sampled from the generator's mapping network.

    Args:
        num_train_pairs: training pairs (an epoch); each uses two fresh codes.
        num_val_pairs: fixed validation pairs (``val_seed``), also used by ``test``.
        truncation_psi: truncation of ``w`` towards the generator's mean latent (1: none).
        seed, val_seed: seeds of training codes + shuffle and of the validation codes.
        generator: optional explicit generator (default: the fitted module's ``backbone.generator``).
    """

    def __init__(self, num_train_pairs: int = 4096, num_val_pairs: int = 64, batch_size: int = 16,
                 val_batch_size: int = 64, truncation_psi: float = 0.7, seed: int = 0, val_seed: int = 12345,
                 num_workers: int = 0, generator: Optional[torch.nn.Module] = None):
        super().__init__(batch_size, val_batch_size, seed, num_workers)
        if num_train_pairs < 1 or num_val_pairs < 1:
            raise ValueError(f"need >= 1 training and validation pairs, got {num_train_pairs}, {num_val_pairs}")
        if not 0.0 <= truncation_psi <= 1.0:
            raise ValueError(f"truncation_psi must lie in [0,1], got {truncation_psi}")
        self.num_train_pairs, self.num_val_pairs = int(num_train_pairs), int(num_val_pairs)
        self.truncation_psi, self.val_seed = float(truncation_psi), int(val_seed)
        self.generator = generator

    def setup(self, stage: Optional[str] = None) -> None:
        if self.val_set is not None:
            return
        gen = _module_generator(self, self.generator)
        n, m = self.num_train_pairs, self.num_val_pairs
        train = sample_wplus(gen, 2 * n, self.seed, self.truncation_psi)
        val = sample_wplus(gen, 2 * m, self.val_seed, self.truncation_psi)
        self.train_set = PairDataset(train, torch.stack([torch.arange(n), torch.arange(n, 2 * n)], 1))
        self.val_set = PairDataset(val, torch.stack([torch.arange(m), torch.arange(m, 2 * m)], 1))


def load_wplus_file(path: str | os.PathLike, num_ws: Optional[int] = None, w_dim: Optional[int] = None
                    ) -> torch.Tensor:
    """Read W+ codes ``[N,num_ws,w_dim]`` from a ``.pt`` file (a tensor or ``{"wplus": tensor}``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"W+ code file '{path}' not found (expected a .pt file with a tensor "
                                     f"[N,num_ws,w_dim], e.g. e4e inversions)")
    obj = load_torch_file(path, "W+ codes")
    if isinstance(obj, dict):
        if "wplus" not in obj:
            raise WrongCheckpointKindError(f"'{path}' is {describe_contents(obj)}, not W+ codes (a tensor "
                                           f"[N,num_ws,w_dim] or {{'wplus': tensor}}, e.g. `ipsb predict --config "
                                           f"lightning_configs/invert.yaml`)")
        obj = obj["wplus"]
    if not isinstance(obj, torch.Tensor) or obj.dim() != 3 or not obj.is_floating_point():
        what = list(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise UnexpectedContentError(f"'{path}' must hold float W+ codes [N,num_ws,w_dim] (a tensor or "
                                     f"{{'wplus': tensor}}), found {what}")
    if (num_ws is not None and obj.shape[1] != num_ws) or (w_dim is not None and obj.shape[2] != w_dim):
        raise UnexpectedContentError(f"'{path}' holds W+ codes of shape {list(obj.shape)}, but the generator "
                                     f"expects [N,{num_ws},{w_dim}]")
    return obj.float()


class LatentFileDataModule(_PairDataModule):
    """(w_s, w_t) pairs from precomputed W+ codes in a file.

    Args:
        path: ``.pt`` file with ``[N,num_ws,w_dim]`` codes (or ``{"wplus": ...}``).
        num_val_codes: the last codes of the file, held out; validation pairs are made among them.
        num_train_pairs: random training pairs among the other codes (default: one per code).
        num_val_pairs: fixed validation pairs.
        num_ws, w_dim: expected W+ shape. Leave them out: they come from the fitted module's generator
            (``trainer.lightning_module.backbone.generator``), and a file of another shape is refused
            at setup with one error naming it and both shapes. Given, they must equal the generator's.
    """

    def __init__(self, path: str, num_val_codes: int = 64, num_train_pairs: Optional[int] = None,
                 num_val_pairs: int = 64, batch_size: int = 16, val_batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0, num_ws: Optional[int] = None, w_dim: Optional[int] = None):
        super().__init__(batch_size, val_batch_size, seed, num_workers)
        self.path, self.num_val_codes = path, int(num_val_codes)
        self.num_train_pairs, self.num_val_pairs = num_train_pairs, int(num_val_pairs)
        self.num_ws, self.w_dim = num_ws, w_dim

    def setup(self, stage: Optional[str] = None) -> None:
        if self.val_set is not None:
            return
        num_ws, w_dim = self.num_ws, self.w_dim
        try:
            gen = _module_generator(self, None)
        except ValueError:          # no module being fitted: only the explicit sizes are checked
            gen = None
        if gen is not None:
            have = (int(gen.num_ws), int(gen.w_dim))
            if (num_ws is not None and num_ws != have[0]) or (w_dim is not None and w_dim != have[1]):
                raise ValueError(f"LatentFileDataModule for '{self.path}': num_ws/w_dim [{num_ws},{w_dim}] differ "
                                 f"from the generator's [{have[0]},{have[1]}]; leave them out (they come from "
                                 f"the generator)")
            num_ws, w_dim = have
        codes = load_wplus_file(self.path, num_ws, w_dim)
        n_val = self.num_val_codes
        n_train = codes.shape[0] - n_val
        if n_val < 2 or n_train < 2:
            raise ValueError(f"'{self.path}' has {codes.shape[0]} codes; need >= 2 for training and "
                             f"num_val_codes={n_val} >= 2 held out")
        gen = torch.Generator().manual_seed(self.seed)
        p = self.num_train_pairs or n_train
        self.train_set = PairDataset(codes, _distinct_pairs(n_train, p, gen))
        self.val_set = PairDataset(codes, _distinct_pairs(n_val, self.num_val_pairs,
                                                          torch.Generator().manual_seed(self.seed + 1), n_train))


__all__ = ["LatentPairDataModule", "LatentFileDataModule", "PairDataset", "ResumableSampler", "sample_wplus",
           "load_wplus_file"]
