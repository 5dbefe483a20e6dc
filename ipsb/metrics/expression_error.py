"""Expression error between swap and target from Deep3D expression coefficients (docs/evaluation.md).

Inputs: the 64-d expression coefficients ``[B,64]`` (the ``exp`` group of the Deep3DFaceRecon
regressor) of the swap and of the target. Two named numbers:

* ``l2`` -- mean over samples of ``||e_swap - e_target||_2``;
* ``sqrt_mse`` -- ``sqrt(MSE * 64)`` with MSE the mean squared difference over all samples and the 64
  coefficients: a dataset-level RMS of the per-sample L2 (it equals ``l2`` only when all samples have
  the same error, and is >= ``l2`` otherwise).

Exact under DDP via per-sample ``cat`` states de-duplicated by ``sample_index``.
"""
from __future__ import annotations

from torch import Tensor
from torchmetrics import Metric

from ipsb.metrics.sample_dedup import check_sample_index, per_sample_states


def expression_sq_distance(swap_exp: Tensor, target_exp: Tensor) -> Tensor:
    """Per-sample squared L2 distance ``[B]`` (float64) of expression coefficients ``[B,E]``; its square
    root is the per-sample expression error that ``l2`` averages."""
    return (swap_exp.detach().double() - target_exp.detach().double()).square().sum(1)


class ExpressionError(Metric):
    """:meth:`compute` returns ``{"l2": mean L2, "sqrt_mse": sqrt(MSE * num_coeffs)}``."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, num_coeffs: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.num_coeffs = int(num_coeffs)
        self.add_state("sq_dist", default=[], dist_reduce_fx="cat")
        self.add_state("sample_index", default=[], dist_reduce_fx="cat")

    def update(self, swap_exp: Tensor, target_exp: Tensor, sample_index: Tensor) -> None:
        """swap_exp / target_exp ``[B,num_coeffs]`` expression coefficients; sample_index ``[B]``."""
        for name, x in (("swap_exp", swap_exp), ("target_exp", target_exp)):
            if x.dim() != 2 or x.shape[1] != self.num_coeffs:
                raise ValueError(f"ExpressionError.update: {name} must be [B,{self.num_coeffs}] expression "
                                 f"coefficients, got {list(x.shape)}")
        if swap_exp.shape != target_exp.shape:
            raise ValueError(f"ExpressionError.update: swap {list(swap_exp.shape)} and target "
                             f"{list(target_exp.shape)} differ in batch size")
        sq = expression_sq_distance(swap_exp, target_exp)
        self.sq_dist.append(sq)
        self.sample_index.append(check_sample_index(sample_index, sq.shape[0], "ExpressionError.update").to(sq.device))

    def compute(self) -> dict[str, Tensor]:
        _, sq = per_sample_states(self.sample_index, self.sq_dist, what="ExpressionError")
        mse = sq.sum() / (sq.numel() * self.num_coeffs)
        return {"l2": sq.sqrt().mean().float(), "sqrt_mse": (mse * self.num_coeffs).sqrt().float()}
