"""Stage-2 per-W+-layer mixing weights: ``w' = lambda * w_s->t + (1 - lambda) * w_t``.

``lambda [B,num_ws,1]`` in ``[0,1]``: 1 keeps the stage-1 swap on that layer, 0 takes the target's
code (its hair, background, fine detail). It is a learned per-layer value, optionally plus a per-pair
correction predicted by a small MLP head from pair features (e.g. the mapper's 3DMM features).

Initialisation: every raw value is exactly 1 and the head's last layer is zero, so ``w'`` starts at
``w_s->t``. The raw value is clamped to ``[0,1]`` in the forward pass and projected back into
``[0,1]`` after each optimiser step (:meth:`LayerLambda.project_`), so a layer that wants to leave the
interval stays on its edge instead of losing its gradient forever (projected gradient descent; a
sigmoid could not start at exactly 1).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class LayerLambda(nn.Module):
    """Per-layer mixing weights.

    Args:
        num_ws: rows of W+.
        init: initial lambda of every layer (1.0: start at the stage-1 swap).
        pair_features: width of the per-pair feature vector for the optional head (0: no head).
        hidden_dim: the head's hidden width.
    """

    def __init__(self, num_ws: int, init: float = 1.0, pair_features: int = 0, hidden_dim: int = 128):
        super().__init__()
        if not 0.0 <= init <= 1.0:
            raise ValueError(f"initial lambda must lie in [0,1], got {init}")
        self.num_ws = int(num_ws)
        self.raw = nn.Parameter(torch.full((self.num_ws,), float(init)))
        self.head: Optional[nn.Module] = None
        if pair_features > 0:
            last = nn.Linear(hidden_dim, self.num_ws)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.head = nn.Sequential(nn.Linear(pair_features, hidden_dim), nn.LeakyReLU(0.2), last)
        self.pair_features = int(pair_features)

    def forward(self, batch: int, features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """-> lambda ``[batch,num_ws,1]`` in [0,1]; ``features [batch,pair_features]`` needed with a head."""
        raw = self.raw.unsqueeze(0).expand(batch, self.num_ws)
        if self.head is not None:
            if features is None or features.dim() != 2 or features.shape != (batch, self.pair_features):
                got = None if features is None else list(features.shape)
                raise ValueError(f"the per-pair lambda head needs features [{batch},{self.pair_features}], got {got}")
            raw = raw + self.head(features)
        return raw.clamp(0.0, 1.0).unsqueeze(-1)

    def mix(self, w_swap: torch.Tensor, w_target: torch.Tensor, features: Optional[torch.Tensor] = None
            ) -> torch.Tensor:
        """``lambda * w_swap + (1 - lambda) * w_target``; both ``[B,num_ws,w_dim]``."""
        if w_swap.shape != w_target.shape or w_swap.dim() != 3 or w_swap.shape[1] != self.num_ws:
            raise ValueError(f"w_swap and w_target must both be [B,{self.num_ws},w_dim], "
                             f"got {list(w_swap.shape)} and {list(w_target.shape)}")
        lam = self(w_swap.shape[0], features).to(w_swap.dtype)
        return lam * w_swap + (1 - lam) * w_target

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the learned per-layer values back into [0,1] (call after each optimiser step)."""
        self.raw.clamp_(0.0, 1.0)
