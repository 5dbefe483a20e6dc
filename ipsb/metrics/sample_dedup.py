"""De-duplication of per-sample metric states by sample index (exact metrics under DDP).

A ``DistributedSampler`` pads the last round with repeats of the first samples so every rank gets
the same number of items; a metric that simply summed over all gathered samples would count those
repeats twice. ipsb metrics therefore keep *per-sample* values in ``cat`` states together with each
sample's ``sample_index`` (``[N]`` int64, unique per dataset item) and, at ``compute()``, keep one
entry per index **sorted by index**. Sorting makes the reduction order independent of how the data
were split over processes, so 2 processes give bit-for-bit the result of 1.

Hand-written because torchmetrics has no index-aware de-duplication (its ``cat`` reduction keeps
every gathered row).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat


def check_sample_index(sample_index: Tensor, batch: int, what: str) -> Tensor:
    """Validate ``sample_index`` (``[batch]`` integer tensor) and return it as int64."""
    if not isinstance(sample_index, Tensor):
        sample_index = torch.as_tensor(sample_index)
    if sample_index.dim() != 1 or sample_index.shape[0] != batch:
        raise ValueError(f"{what}: sample_index must be a 1-D tensor with one entry per sample "
                         f"({batch}), got shape {list(sample_index.shape)}")
    if sample_index.dtype.is_floating_point or sample_index.dtype == torch.bool:
        raise ValueError(f"{what}: sample_index must be an integer tensor, got {sample_index.dtype}")
    return sample_index.long()


def cat_state(state: Union[Tensor, Sequence[Tensor]], like: Tensor | None = None) -> Tensor:
    """A ``cat`` state (list of tensors before sync, one tensor after) as one tensor (``[0]`` if empty)."""
    if isinstance(state, Tensor):
        return state
    if len(state) == 0:
        return torch.zeros(0) if like is None else like.new_zeros((0,) + tuple(like.shape[1:]))
    return dim_zero_cat(list(state))


def first_occurrence(sample_index: Tensor) -> Tensor:
    """Positions ``[U]`` of the first occurrence of each distinct index, ordered by ascending index."""
    n = sample_index.shape[0]
    uniq, inverse = torch.unique(sample_index, sorted=True, return_inverse=True)
    pos = torch.arange(n, device=sample_index.device)
    first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=sample_index.device)
    return first.scatter_reduce(0, inverse, pos, reduce="amin")


def dedup_by_index(sample_index: Tensor, *values: Tensor, what: str = "metric",
                   check_consistent: bool = True, rtol: float = 1e-3,
                   atol: float = 1e-4) -> tuple[Tensor, ...]:
    """Keep one row per sample index, sorted by index: ``(index [U], value_1 [U,...], ...)``.

    With ``check_consistent`` a ValueError is raised when two rows sharing an index hold different
    values beyond ``atol + rtol*|v|`` (two datasets with clashing indices would otherwise be silently
    merged; the tolerance allows the float noise of computing one item in two different batches).
    """
    keep = first_occurrence(sample_index)
    if check_consistent and keep.shape[0] != sample_index.shape[0]:
        _, inverse = torch.unique(sample_index, sorted=True, return_inverse=True)
        for v in values:
            ref = v[keep][inverse]
            if v.dtype.is_floating_point:  # the same item may be computed in another batch: tiny noise
                same = ((ref - v).abs() <= atol + rtol * ref.abs()) | (torch.isnan(ref) & torch.isnan(v))
            else:
                same = ref == v
            bad = ~same.reshape(same.shape[0], -1).all(1)
            if bool(bad.any()):
                idx = sample_index[bad][0].item()
                raise ValueError(f"{what}: sample_index {idx} was updated twice with different values; "
                                 f"sample indices must identify one dataset item each")
    return (sample_index[keep],) + tuple(v[keep] for v in values)


def per_sample_states(index_state: Union[Tensor, Sequence[Tensor]], *value_states: Union[Tensor, Sequence[Tensor]],
                      what: str) -> tuple[Tensor, ...]:
    """A metric's ``cat`` states as :func:`dedup_by_index` rows ``(index [U], value_1 [U,...], ...)``;
    RuntimeError ``"<what>.compute: no samples"`` when nothing was updated."""
    idx = cat_state(index_state)
    if idx.numel() == 0:
        raise RuntimeError(f"{what}.compute: no samples")
    return dedup_by_index(idx, *(cat_state(v) for v in value_states), what=what)
