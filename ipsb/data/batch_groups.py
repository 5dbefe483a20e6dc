"""Fixed batches as dataset items, so a batch is the same whatever the number of processes.

Lightning splits a predict loader over DDP ranks sample by sample, so with 2 processes sample 1 sits
in another batch, at another position, than with 1. Batched kernels then give it slightly different
float values, and an optimisation (Adam scales every step to about ``lr`` whatever the gradient's
size) turns those into visibly different results. :class:`BatchGroups` makes each *batch* one item:
group ``k`` is samples ``[k*B, (k+1)*B)`` of the whole dataset, collated; :meth:`BatchGroups.loader` loads one group per
step (a batch of one item, unwrapped), and Lightning hands whole groups to the ranks. A resumed run leaves out the
groups it has (``skip``), and the rest are still the same groups.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from torch.utils.data import DataLoader, Dataset, default_collate


def _only_item(items: list):
    """collate_fn of a loader over groups: the batch of one group is that group."""
    return items[0]


def batch_groups(n: int, batch_size: int) -> list[list[int]]:
    """``[[0..B-1], [B..2B-1], ...]`` over ``n`` samples (the last group may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


class BatchGroups(Dataset):
    """Item ``k`` = the collated samples of group ``k`` of ``dataset`` (see the module docstring).

    ``skip``: sample indices already done; a group is left out when all its samples are in it.
    """

    def __init__(self, dataset: Sequence, batch_size: int, skip: Iterable[int] = ()):
        self.dataset = dataset
        done = set(int(i) for i in skip)
        self.groups = [g for g in batch_groups(len(dataset), batch_size) if not set(g) <= done]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, k: int):
        return default_collate([self.dataset[i] for i in self.groups[k]])

    def loader(self, num_workers: int = 0) -> DataLoader:
        """Sequential loader yielding one collated group per step."""
        return DataLoader(self, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_only_item)
