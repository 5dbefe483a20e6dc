"""L_id: one minus the cosine between identity embeddings of the swap and of the source.

The identity network (:class:`~ipsb.backbone.interfaces.IdentityEncoder`) takes aligned faces
``[B,3,H,W]`` in [-1,1] and does its own crop/resize (IR-SE50: 256 -> crop -> 112), so the loss
hands it the generator's output as is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def identity_cosine(embedding: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine ``[B]`` in [-1,1] between two ``[B,D]`` embeddings (normalised here again)."""
    if embedding.shape != reference.shape or embedding.dim() != 2:
        raise ValueError(f"identity embeddings must both be [B,D], got {list(embedding.shape)} "
                         f"and {list(reference.shape)}")
    return F.cosine_similarity(embedding, reference, dim=1, eps=1e-8)


def identity_loss(identity: nn.Module, image: torch.Tensor, reference_embedding: torch.Tensor) -> torch.Tensor:
    """``mean_b (1 - cos(E(image_b), reference_b))``, a scalar in [0,2].

    Args:
        identity: the frozen identity network ``[B,3,H,W] in [-1,1] -> [B,D]``.
        image: the swapped face ``[B,3,H,W]`` in [-1,1] (gradients flow through it).
        reference_embedding: the source's embedding ``[B,D]`` (computed once, no gradient needed).
    """
    return (1 - identity_cosine(identity(image), reference_embedding.detach())).mean()
