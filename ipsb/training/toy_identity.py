"""Invariance fine-tuning of the toy identity encoder (used by :mod:`ipsb.training.toy_networks`).

For a training code ``a`` and its same-identity partner ``b`` (W+ rows 0-3 kept, rows 4-9 from
another code: :func:`ipsb.training.toy_data.same_identity_partners`) the loss is

    MSE(features_a, t) + MSE(features_b, t) + invariance * MSE(features_a, features_b)

with ``t`` the standardised id + tex coefficients of the identity, so the embedding stays
discriminative (different identities ~orthogonal) while it becomes insensitive to pose and
expression: the basis divides attribute change by identity change, so an identity network that
reacts to pose would tilt the pose directions. Run in phases of rising invariance weight.

Pairs only constrain the embedding at far-apart points; between them it can still wiggle with pose
(exact JVP per standard deviation of a coefficient, for the encoder trained without this phase and
without the input low-pass: 0.47 for yaw/pitch/roll, 0.23 for expression, 0.15 for the identity
shape coefficients; for the shipped one: 0.09, 0.05, 0.06, with albedo at 0.59). The last phase
therefore also penalises the embedding's derivative along exact image tangents of expression and
pose (:func:`ipsb.training.toy_data.attribute_tangents`), the quantity the basis' identity Hessian
is made of:

    pair loss + weight * ||(f(x + h T) - f(x - h T)) / 2h||^2 + MSE(f(x), t_x)

(central difference with ``h = 1e-3``; the network is smooth, so this is its JVP to O(h^2)).
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


def tangent_penalty(ident: ToyIdentity, images: torch.Tensor, tangents: torch.Tensor, target: torch.Tensor,
                    weight: float, h: float = 1e-3) -> Callable[[torch.Tensor], torch.Tensor]:
    """A loss of indices ``[b]`` into the ``n * per_code`` tangents ``[n,per_code,3,R,R]`` of ``images
    [n,3,R,R]``: ``weight`` x the squared embedding derivative along the tangent, plus the MSE of
    ``features`` to ``target [n,14]`` at those images (so the derivative is flattened where the
    value is held)."""
    per_code = tangents.shape[1]

    def loss(j: torch.Tensor) -> torch.Tensor:
        i, k = j // per_code, j % per_code
        x, t = images[i].float(), tangents[i, k].float()
        derivative = (ident.features(x + h * t) - ident.features(x - h * t)) / (2 * h)
        return weight * derivative.pow(2).mean() + F.mse_loss(ident.features(x), target[i])

    return loss


def local_invariance_loss(pair_loss: Callable[[torch.Tensor], torch.Tensor],
                              penalty: Callable[[torch.Tensor], torch.Tensor], num_tangents: int,
                              batch: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``pair_loss(i) + penalty(j)``, ``j`` a seeded batch of ``batch`` tangent indices."""
    gen = torch.Generator().manual_seed(seed)

    def loss(i: torch.Tensor) -> torch.Tensor:
        j = torch.randint(0, num_tangents, (batch,), generator=gen).to(i.device)
        return pair_loss(i) + penalty(j)

    return loss


def finetune_identity(ident: ToyIdentity, images_a, images_b, target, phases: Sequence[tuple[float, int, float]],
                      fit: Callable, batch: int, seed: int, budget: Callable[[int], float] = lambda steps: 0.0
                      ) -> None:
    """Run ``phases`` of ``(invariance weight, steps, lr)`` with ``fit`` (:func:`ipsb.training.toy_networks.fit`);
    ``budget(steps)`` gives a phase's wall-clock limit in seconds (0: none)."""
    for k, (weight, steps, lr) in enumerate(phases):
        fit(ident, identity_pair_loss(ident, images_a, images_b, target, weight), images_a.shape[0], steps, batch,
            lr, seed + 17 + k, f"identity (invariance {weight:g})", budget(steps))
