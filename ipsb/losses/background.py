"""L_b: the background loss of stage 3, a masked L1 between result and target outside the face.

    L_b = sum(M_bg * |I_result - I_target|) / (3 * sum(M_bg) + eps),   M_bg = 1 - face mask

per sample (``[B]``), i.e. the mean absolute error per channel and pixel over the region outside the
face (images in [-1,1], so values lie in [0,2]). The same number is stage 3's acceptance metric.
"""
from __future__ import annotations

import torch


def background_l1(result: torch.Tensor, target: torch.Tensor, outside: torch.Tensor,
                  eps: float = 1e-6) -> torch.Tensor:
    """Per-sample masked L1 ``[B]``: ``result``/``target`` ``[B,3,H,W]``, ``outside`` ``[B,1,H,W]`` in [0,1]."""
    if result.shape != target.shape or result.dim() != 4:
        raise ValueError(f"background L1 needs two [B,3,H,W] images of one shape, got {list(result.shape)} "
                         f"and {list(target.shape)}")
    if outside.dim() != 4 or outside.shape[1] != 1 or outside.shape[0] != result.shape[0] \
            or outside.shape[-2:] != result.shape[-2:]:
        raise ValueError(f"the background mask must be [B,1,H,W] = [{result.shape[0]},1,{result.shape[2]},"
                         f"{result.shape[3]}], got {list(outside.shape)}")
    outside = outside.to(result.dtype)
    err = (outside * (result - target).abs()).sum((1, 2, 3))
    return err / (result.shape[1] * outside.sum((1, 2, 3)) + eps)


def background_loss(result: torch.Tensor, target: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """Scalar mean of :func:`background_l1`."""
    return background_l1(result, target, outside).mean()
