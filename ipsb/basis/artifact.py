"""The saved StyleIPSB basis: orthonormal directions in W+ and what produced them.

``V [num_ws*w_dim, K]`` float32, orthonormal columns, zero rows outside ``layer_mask``; the columns
of group ``g`` are ``V[:, groups[g][0]:groups[g][1]]``. A W+ offset ``dw [B,num_ws,w_dim]`` has
coordinates ``c = V^T vec(dw)`` ``[B,K]``; ``apply(w, c) = w + reshape(V c)``.

The file is a plain dict of tensors / dicts / strings / numbers (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from ipsb.checkpoints import (CorruptCheckpointError, MissingCheckpointError, WrongCheckpointKindError,
                              describe_contents, load_torch_file)

KIND = "ipsb.basis"
FORMAT_VERSION = 1


class Basis:
    """An orthonormal basis of W+ directions grouped by attribute (pose, exp, light, ...).

    Args:
        V: ``[num_ws*w_dim, K]`` orthonormal columns, zero rows outside ``layer_mask``.
        groups: ``{name: (start, end)}`` column ranges of ``V`` (contiguous, in column order).
        eigenvalues: ``{name: [k_g]}`` generalized eigenvalues of the kept directions (descending).
        explained_energy: ``{name: float in [0,1]}``.
        layer_mask: bool ``[num_ws]``.
        num_ws, w_dim: the generator's W+ shape.
        generator_sha256: hash of the generator checkpoint file, ``None`` for a toy / random one.
        config: how the basis was made (plain values).
    """

    def __init__(self, V: torch.Tensor, groups: dict[str, tuple[int, int]],
                 eigenvalues: dict[str, torch.Tensor], explained_energy: dict[str, float],
                 layer_mask: torch.Tensor, num_ws: int, w_dim: int,
                 generator_sha256: Optional[str] = None, config: Optional[dict] = None):
        self.num_ws, self.w_dim = int(num_ws), int(w_dim)
        if V.dim() != 2 or V.shape[0] != self.num_ws * self.w_dim:
            raise ValueError(f"V must be [num_ws*w_dim={self.num_ws * self.w_dim}, K], got {list(V.shape)}")
        layer_mask = torch.as_tensor(layer_mask).to(torch.bool)
        if layer_mask.shape != (self.num_ws,):
            raise ValueError(f"layer_mask must be bool [{self.num_ws}], got {list(layer_mask.shape)}")
        k = V.shape[1]
        groups = {str(g): (int(a), int(b)) for g, (a, b) in groups.items()}
        for g, (a, b) in groups.items():
            if not 0 <= a <= b <= k:
                raise ValueError(f"group {g!r} column range ({a},{b}) is outside [0,{k}]")
        self.V = V.to(torch.float32)
        self.groups = groups
        self.eigenvalues = {g: torch.as_tensor(e).detach().to(torch.float64).cpu() for g, e in eigenvalues.items()}
        self.explained_energy = {g: float(e) for g, e in explained_energy.items()}
        self.layer_mask = layer_mask.to(self.V.device)
        self.generator_sha256 = generator_sha256
        self.config = dict(config or {})

    # ---------------------------------------------------------------- use
    @property
    def num_directions(self) -> int:
        """``K``, the number of columns of ``V``."""
        return self.V.shape[1]

    @property
    def device(self) -> torch.device:
        return self.V.device

    def _check_w(self, w: torch.Tensor, name: str) -> None:
        if w.dim() != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"{name} must be [B,{self.num_ws},{self.w_dim}] for this basis, got {list(w.shape)}")

    def coords(self, dw: torch.Tensor) -> torch.Tensor:
        """W+ offsets ``dw [B,num_ws,w_dim]`` -> coordinates ``[B,K]`` (orthogonal projection)."""
        self._check_w(dw, "dw")
        return dw.reshape(dw.shape[0], -1) @ self.V.to(dw.dtype)

    def offset(self, c: torch.Tensor) -> torch.Tensor:
        """Coordinates ``[B,K]`` -> W+ offset ``[B,num_ws,w_dim]`` (``reshape(V c)``)."""
        if c.dim() != 2 or c.shape[1] != self.num_directions:
            raise ValueError(f"coordinates must be [B,{self.num_directions}], got {list(c.shape)}")
        return (c @ self.V.to(c.dtype).T).reshape(c.shape[0], self.num_ws, self.w_dim)

    def apply(self, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``w [B,num_ws,w_dim] + reshape(V c)``, ``c [B,K]``; differentiable, no in-place ops."""
        self._check_w(w, "w")
        if c.shape[0] != w.shape[0]:
            raise ValueError(f"w has batch {w.shape[0]} but c has batch {c.shape[0]}")
        return w + self.offset(c)

    def group_vectors(self, group: str) -> torch.Tensor:
        """Columns of one group ``[num_ws*w_dim, k_g]``."""
        if group not in self.groups:
            raise ValueError(f"unknown basis group {group!r}; this basis has {list(self.groups)}")
        a, b = self.groups[group]
        return self.V[:, a:b]

    def restrict(self, groups: Iterable[str]) -> "Basis":
        """A basis with only the named groups' columns (in the given order)."""
        groups = list(groups)
        cols, new_groups, start = [], {}, 0
        for g in groups:
            v = self.group_vectors(g)
            cols.append(v)
            new_groups[g] = (start, start + v.shape[1])
            start += v.shape[1]
        return Basis(torch.cat(cols, 1), new_groups, {g: self.eigenvalues[g] for g in groups if g in self.eigenvalues},
                     {g: self.explained_energy[g] for g in groups if g in self.explained_energy},
                     self.layer_mask, self.num_ws, self.w_dim, self.generator_sha256,
                     {**self.config, "restricted_to": groups})

    def to(self, device) -> "Basis":
        """Move ``V`` and ``layer_mask`` (in place); returns self."""
        self.V = self.V.to(device)
        self.layer_mask = self.layer_mask.to(device)
        return self

    # ---------------------------------------------------------------- files
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND, "format_version": FORMAT_VERSION,
            "V": self.V.detach().cpu().contiguous(),
            "groups": {g: [a, b] for g, (a, b) in self.groups.items()},
            "eigenvalues": {g: e.cpu() for g, e in self.eigenvalues.items()},
            "explained_energy": dict(self.explained_energy),
            "layer_mask": self.layer_mask.cpu(),
            "num_ws": self.num_ws, "w_dim": self.w_dim,
            "generator_sha256": self.generator_sha256 or "",
            "config": self.config,
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the basis to ``path``; refuses to replace an existing file unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"basis file '{path}' already exists; pass overwrite=True to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_state_dict(cls, state: Any, source: str = "<state>") -> "Basis":
        if not isinstance(state, dict) or state.get("kind") != KIND:
            raise WrongCheckpointKindError(
                f"'{source}' is {describe_contents(state)}, not an ipsb basis file (kind {KIND!r}); build one "
                f"with `ipsb fit --config lightning_configs/basis.yaml` (or lightning_configs/toy/basis.yaml)")
        if state.get("format_version") != FORMAT_VERSION:
            raise CorruptCheckpointError(
                f"basis file '{source}' has format version {state.get('format_version')}, "
                f"this ipsb reads {FORMAT_VERSION}")
        missing = [k for k in ("V", "groups", "eigenvalues", "explained_energy", "layer_mask", "num_ws", "w_dim")
                   if k not in state]
        if missing:
            raise CorruptCheckpointError(f"basis file '{source}' lacks entries {missing}")
        try:
            return cls(state["V"], {g: tuple(r) for g, r in state["groups"].items()}, state["eigenvalues"],
                       state["explained_energy"], state["layer_mask"], state["num_ws"], state["w_dim"],
                       state.get("generator_sha256") or None, state.get("config", {}))
        except ValueError as e:
            raise CorruptCheckpointError(f"basis file '{source}' is inconsistent: {e}") from e

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Basis":
        """Read a file written by :meth:`save` (``weights_only``); clear errors when missing or wrong."""
        path = Path(path)
        if not path.is_file():
            raise MissingCheckpointError(
                f"basis file '{path}' not found; build one with `ipsb fit --config lightning_configs/basis.yaml` "
                f"(or lightning_configs/toy/basis.yaml)")
        state = load_torch_file(path, "an ipsb basis")
        return cls.from_state_dict(state, str(path)).to(map_location)

    def __repr__(self) -> str:
        groups = ", ".join(f"{g}:{b - a}" for g, (a, b) in self.groups.items())
        layers = torch.nonzero(self.layer_mask).flatten().tolist()
        return f"Basis(K={self.num_directions}, groups=[{groups}], layers={layers}, W+={self.num_ws}x{self.w_dim})"
