"""Invariance fine-tuning of the toy identity encoder (used by :mod:`ipsb.backbone.toy.train`).

For a training code ``a`` and its same-identity partner ``b`` (W+ rows 0-3 kept, rows 4-9 from
another code: :func:`ipsb.backbone.toy.data.same_identity_partners`) the loss is

    MSE(features_a, t) + MSE(features_b, t) + invariance * MSE(features_a, features_b)

with ``t`` the standardised id + tex coefficients of the identity, so the embedding stays
discriminative (different identities ~orthogonal) while it becomes locally insensitive to pose and
expression: the basis divides attribute change by identity change, so an identity network that
reacts to pose would tilt the pose directions. Run in phases of rising invariance weight.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ipsb.backbone.toy.networks import ToyIdentity


def identity_pair_loss(ident: ToyIdentity, images_a: torch.Tensor, images_b: torch.Tensor, target: torch.Tensor,
                       invariance: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A loss of batch indices ``[b]`` over pair images ``[n,3,64,64]`` and targets ``[n,14]``."""

    def loss(i: torch.Tensor) -> torch.Tensor:
        fa = ident.features(images_a[i].float())
        fb = ident.features(images_b[i].float())
        t = target[i]
        return F.mse_loss(fa, t) + F.mse_loss(fb, t) + invariance * F.mse_loss(fa, fb)

    return loss


def finetune_identity(ident: ToyIdentity, images_a, images_b, target, phases: Sequence[tuple[float, int, float]],
                      fit: Callable, batch: int, seed: int, budget: Callable[[int], float] = lambda steps: 0.0
                      ) -> None:
    """Run ``phases`` of ``(invariance weight, steps, lr)`` with ``fit`` (:func:`train.fit`);
    ``budget(steps)`` gives a phase's wall-clock limit in seconds (0: none)."""
    for k, (weight, steps, lr) in enumerate(phases):
        fit(ident, identity_pair_loss(ident, images_a, images_b, target, weight), images_a.shape[0], steps, batch,
            lr, seed + 17 + k, f"identity (invariance {weight:g})", budget(steps))
