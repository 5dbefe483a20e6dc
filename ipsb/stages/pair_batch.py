"""What stages 1 and 2 compute once per batch of (w_s, w_t) pairs, without gradients.

:func:`measure_pairs` renders source and target with the frozen generator and reads them with the
frozen networks: images ``[B,3,R,R]`` in [-1,1], 3DMM coefficients ``[B,C]``, the source identity
embedding ``[B,D]`` and what a swap of the pairs is measured against
(:class:`~ipsb.eval.swap_measures.PairReference`: that embedding, the target's expression and pose, read
by :class:`~ipsb.eval.swap_measures.BackboneNetworks`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ipsb.eval.swap_measures import BackboneNetworks, PairReference, measure_reference


@dataclass
class PairBatch:
    """Frozen measurements of a batch of pairs (all tensors detached)."""

    w_s: torch.Tensor
    w_t: torch.Tensor
    image_s: torch.Tensor
    image_t: torch.Tensor
    coeff_s: torch.Tensor
    coeff_t: torch.Tensor
    id_s: torch.Tensor
    reference: PairReference


def check_pair(batch: dict, num_ws: int, w_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch["w_s"]``, ``batch["w_t"]``, each checked to be ``[B,num_ws,w_dim]``."""
    for key in ("w_s", "w_t"):
        if key not in batch:
            raise ValueError(f"a pair batch needs keys 'w_s' and 'w_t' (W+ codes), got {sorted(batch)}")
        w = batch[key]
        if w.dim() != 3 or w.shape[1] != num_ws or w.shape[2] != w_dim:
            raise ValueError(f"batch['{key}'] must be [B,{num_ws},{w_dim}] for this generator, got {list(w.shape)}")
    return batch["w_s"], batch["w_t"]


@torch.no_grad()
def measure_pairs(backbone, w_s: torch.Tensor, w_t: torch.Tensor, noise_mode: str = "const") -> PairBatch:
    """Synthesize and measure source and target (one generator call for both)."""
    images = backbone.generator.synthesis(torch.cat([w_s, w_t]), noise_mode=noise_mode)
    coeffs = backbone.regressor(images)
    b = w_s.shape[0]
    image_s, image_t = images[:b], images[b:]
    coeff_s, coeff_t = coeffs[:b], coeffs[b:]
    id_s = backbone.identity(image_s)
    ref = measure_reference(BackboneNetworks(backbone), image_s, image_t, target_coeffs=coeff_t, source_embedding=id_s)
    return PairBatch(w_s, w_t, image_s, image_t, coeff_s, coeff_t, id_s, ref)
