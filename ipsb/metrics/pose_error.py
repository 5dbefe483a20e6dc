"""Head-pose error between swap and target from HopeNet outputs (docs/evaluation.md).

Three named numbers, because papers and their code use different forms:

* ``deg_l2`` -- mean over samples of the L2 norm of the (yaw, pitch, roll) difference in degrees,
  the angles being HopeNet's softmax expectation ``sum(softmax(logits) * arange(66)) * 3 - 99``.
* ``bin_sqrt_mse`` -- the pooled bin form ``sqrt(MSE * 66) / 2`` where MSE is the mean squared
  difference over *all* samples, the 3 angles and the 66 bins of the bin vectors (``bin_values``:
  ``"softmax"`` probabilities, default, or the raw ``"logits"``); it is a dataset-level RMS,
  i.e. ``sqrt(sum_i ||b_i^swap - b_i^target||^2 / (3 N)) / 2``.
* ``logit_angle_l2`` (logits inputs only) -- ReliableSwap's FF++ form: per angle ``a``,
  ``sqrt(MSE_a * 66) / 2`` with ``MSE_a`` the mean squared difference of the *raw logits* over all
  samples and the 66 bins, then the mean over yaw, pitch and roll.

Inputs are ``[B,3]`` degrees (``inputs="degrees"``: only ``deg_l2``) or ``[B,3,66]`` bin logits
(``inputs="logits"``: all three; ``ipsb.backbone.pose.HopeNet.logits`` gives them). Per-sample values
sit in ``cat`` states, de-duplicated by ``sample_index`` at compute (exact under DDP, see
:mod:`ipsb.metrics.sample_dedup`).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from ipsb.backbone.pose import bins_to_degrees as hopenet_degrees  # logits [...,66] -> degrees [...]
from ipsb.metrics.sample_dedup import check_sample_index, per_sample_states

NUM_BINS = 66


def pose_degree_distance(swap: Tensor, target: Tensor) -> Tensor:
    """Per-sample L2 distance ``[B]`` (float64) of (yaw, pitch, roll) in degrees: inputs ``[B,3]``
    degrees, or ``[B,3,66]`` HopeNet bin logits (their softmax expectation); ``deg_l2`` averages it."""
    s, t = swap.detach().double(), target.detach().double()
    if s.dim() == 3:
        s, t = hopenet_degrees(s), hopenet_degrees(t)
    return (s - t).norm(dim=1)


class PoseError(Metric):
    """Pose distance swap vs target; :meth:`compute` returns ``{"deg_l2", ["bin_sqrt_mse", "logit_angle_l2"]}``."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, inputs: str = "logits", bin_values: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        if inputs not in ("logits", "degrees"):
            raise ValueError(f"PoseError: inputs must be 'logits' or 'degrees', got {inputs!r}")
        if bin_values not in ("softmax", "logits"):
            raise ValueError(f"PoseError: bin_values must be 'softmax' or 'logits', got {bin_values!r}")
        self.inputs, self.bin_values = inputs, bin_values
        self.add_state("deg_l2", default=[], dist_reduce_fx="cat")
        self.add_state("bin_sq", default=[], dist_reduce_fx="cat")
        self.add_state("logit_sq", default=[], dist_reduce_fx="cat")
        self.add_state("sample_index", default=[], dist_reduce_fx="cat")

    def _check(self, x: Tensor, name: str) -> Tensor:
        want = [3, NUM_BINS] if self.inputs == "logits" else [3]
        if x.dim() != len(want) + 1 or list(x.shape[1:]) != want:
            raise ValueError(f"PoseError.update ({self.inputs!r} inputs): {name} must be [B,{','.join(map(str, want))}], "
                             f"got {list(x.shape)}")
        return x.detach().double()

    def update(self, swap: Tensor, target: Tensor, sample_index: Tensor) -> None:
        """swap / target: ``[B,3,66]`` logits or ``[B,3]`` degrees (see ``inputs``); sample_index ``[B]``."""
        s, t = self._check(swap, "swap"), self._check(target, "target")
        if s.shape != t.shape:
            raise ValueError(f"PoseError.update: swap {list(s.shape)} and target {list(t.shape)} differ in shape")
        if self.inputs == "logits":
            bs, bt = (torch.softmax(s, -1), torch.softmax(t, -1)) if self.bin_values == "softmax" else (s, t)
            self.bin_sq.append((bs - bt).square().sum((1, 2)))
            self.logit_sq.append((s - t).square().sum(2))                       # [B,3] per angle
        self.deg_l2.append(pose_degree_distance(s, t))
        self.sample_index.append(check_sample_index(sample_index, s.shape[0], "PoseError.update").to(s.device))

    def compute(self) -> dict[str, Tensor]:
        if self.inputs == "degrees":
            _, deg = per_sample_states(self.sample_index, self.deg_l2, what="PoseError")
            return {"deg_l2": deg.mean().float()}
        _, deg, bsq, lsq = per_sample_states(self.sample_index, self.deg_l2, self.bin_sq, self.logit_sq,
                                             what="PoseError")
        mse = bsq.sum() / (bsq.numel() * 3 * NUM_BINS)
        mse_angle = lsq.sum(0) / (lsq.shape[0] * NUM_BINS)                          # [3]
        return {"deg_l2": deg.mean().float(), "bin_sqrt_mse": ((mse * NUM_BINS).sqrt() / 2).float(),
                "logit_angle_l2": ((mse_angle * NUM_BINS).sqrt() / 2).mean().float()}
