"""How far to move along a direction for a given attribute change: per-code bisection on the step.

``measure(w [B,num_ws,w_dim]) -> [B]`` reads the attribute (the regressor on the synthesis, or, in
the toy world, the ground-truth coefficients). For each code the step ``t`` with
``measure(w + t v) - measure(w) = change`` is bracketed by doubling from ``t0`` (up to ``t_max``)
and then bisected; the attribute is assumed monotone along the direction over the bracket (true
for a direction chosen to move it, within the range the generator can reach). Codes whose
attribute cannot reach the change within ``t_max`` are reported (``reached`` False) and keep the
largest step tried. A change of 0 gives step 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class StepSearch:
    """Per-code result: ``step [B]`` (signed, W+ units), ``change [B]`` achieved, ``reached`` bool ``[B]``."""

    step: torch.Tensor
    change: torch.Tensor
    reached: torch.Tensor


@torch.no_grad()
def find_steps(w: torch.Tensor, vector: torch.Tensor, measure: Callable[[torch.Tensor], torch.Tensor],
               change: torch.Tensor, t0: float = 1.0, t_max: float = 64.0, iters: int = 24,
               tol: float = 1e-3) -> StepSearch:
    """Steps along ``vector [num_ws,w_dim]`` that change ``measure`` by ``change [B]`` (signed)."""
    change = torch.as_tensor(change, dtype=w.dtype, device=w.device).expand(w.shape[0]).clone()
    v = vector.to(w)[None]
    base = measure(w)
    sign = torch.sign(change)
    sign[sign == 0] = 1.0
    goal = change.abs()

    def gain(t):                       # attribute change in the requested direction, for steps t [B]
        return sign * (measure(w + t[:, None, None] * v) - base)

    lo = torch.zeros_like(change)
    hi = torch.full_like(change, float(t0))
    g_hi = gain(sign * hi)
    for _ in range(64):
        short = g_hi < goal
        if not bool(short.any()) or float(hi[short].min()) >= t_max:
            break
        lo = torch.where(short, hi, lo)
        hi = torch.where(short, (hi * 2).clamp(max=t_max), hi)
        g_hi = torch.where(short, gain(sign * hi), g_hi)
    reached = g_hi >= goal * (1 - tol)
    for _ in range(iters):
        mid = (lo + hi) / 2
        g = gain(sign * mid)
        below = g < goal
        lo = torch.where(below & reached, mid, lo)
        hi = torch.where(~below & reached, mid, hi)
    zero = change == 0
    step = torch.where(zero, torch.zeros_like(hi), sign * hi)
    achieved = measure(w + step[:, None, None] * v) - base
    return StepSearch(step=step, change=achieved, reached=reached | zero)
