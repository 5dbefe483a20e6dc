"""Checkpoint -> state dict -> strict load into a module, with errors that name the file.

Used by the face-analysis loaders (identity, pose, parsing). ``nn.Module.load_state_dict`` alone
is not enough: official files come with ``module.`` prefixes (DataParallel saves), sometimes
wrapped in ``{"state_dict": ...}``, and PyTorch-0.4-era files lack the ``num_batches_tracked``
BatchNorm counters, which modern torch lists as state. A wrong file should fail with a message
saying which file, what was expected and which keys differ, never load half a network.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Callable, Union

import torch
from torch import nn

from ipsb.checkpoints import (CorruptCheckpointError, WrongCheckpointKindError, describe_contents, foreign_kind,
                              load_torch_file, resolve_checkpoint)

#: A checkpoint source: a registry name, a path, or an already-loaded state dict.
CheckpointSource = Union[str, os.PathLike, Mapping]

#: Wrapper keys under which some training scripts nest the weights.
WRAPPER_KEYS = ("state_dict", "model", "net", "model_state_dict")


def optional_bn_counter(key: str) -> bool:
    """True for BatchNorm ``num_batches_tracked`` entries (absent from pre-1.0 checkpoints)."""
    return key.endswith("num_batches_tracked")


def read_state_dict(source: CheckpointSource, what: str, weights_only: bool = True) -> tuple[dict, str]:
    """Resolve and read a checkpoint; returns ``(state_dict, label)``.

    ``source`` is a registry name / path (resolved with ``resolve_checkpoint``) or a mapping.
    Nested ``{"state_dict": {...}}``-style wrappers are unwrapped and a leading ``module.`` prefix on
    every key is stripped. Raises MissingCheckpointError (no file) or CorruptCheckpointError
    (unreadable, or not a mapping of tensors).
    """
    if isinstance(source, Mapping):
        obj, label = source, "<state dict>"
    else:
        path = resolve_checkpoint(source)
        label = str(path)
        obj = load_torch_file(path, what, weights_only=weights_only)
        foreign = foreign_kind(obj)
        if foreign is not None:
            raise WrongCheckpointKindError(f"'{label}' is {foreign}, not the {what}; check the file name "
                                           f"(checkpoints/README.md lists the expected files)")
    for _ in range(2):  # at most two levels of wrapping
        if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
            if inner:
                obj = obj[inner[0]]
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise WrongCheckpointKindError(
            f"'{label}' does not hold a state dict of tensors for the {what}: it holds "
            f"{describe_contents(dict(obj)) if isinstance(obj, Mapping) else describe_contents(obj)}")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, label


def load_state_strict(module: nn.Module, state: Mapping, label: str, what: str,
                      optional: Callable[[str], bool] = optional_bn_counter) -> nn.Module:
    """Load ``state`` into ``module``; every key must match in name and shape.

    Keys for which ``optional(key)`` is true may be missing (the module keeps its own value).
    Otherwise missing keys, unexpected keys or shape mismatches raise CorruptCheckpointError naming
    ``label``, ``what`` and a few offending keys. Values are cast to the module's dtypes. When
    ``label`` is a file, it is recorded as ``module.checkpoint_path`` (the bundle hashes it).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {list(state[k].shape)} (expected {list(own[k].shape)})"
                   for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                parts.append(f"{len(items)} {name} (e.g. {', '.join(items[:3])})")
        raise CorruptCheckpointError(
            f"'{label}' is not a {what} checkpoint of the expected layout ({len(own)} entries): "
            + "; ".join(parts) + ". Check that the file is the one checkpoints/README.md names "
            "for this network and that the constructor options match it.")
    full = {k: (state[k] if k in state else v).to(dtype=v.dtype) for k, v in own.items()}
    module.load_state_dict(full, strict=True)
    if os.path.isfile(label):
        module.checkpoint_path = label
    return module


def load_checkpoint_into(module: nn.Module, source: CheckpointSource, what: str,
                         weights_only: bool = True,
                         optional: Callable[[str], bool] = optional_bn_counter) -> nn.Module:
    """``read_state_dict`` + ``load_state_strict``; returns ``module``."""
    state, label = read_state_dict(source, what, weights_only=weights_only)
    return load_state_strict(module, state, label, what, optional=optional)
