"""Losses of the toy W+ encoder (:class:`~ipsb.backbone.toy.networks.ToyEncoder`), used by
:mod:`ipsb.training.toy_networks` in two phases:

1. W+ regression: MSE of the predicted standardised offsets to ``(wplus - w_avg) / w_std`` on all ten
   rows, plus ``readout_weight`` x :func:`readout_loss`. The image shows only a few directions of each
   row (30 coefficient readouts of rows 0-7, the background grid of row 8, 8 detail weights of row 9);
   in the others the regression learns the codes' conditional mean, so encoded codes stay in the
   distribution the stages were trained on. That unpredictable part dominates the W+ MSE and its
   gradients, so the readout term states the visible part directly: the generator's own readouts of
   the predicted and the true code (coefficients, background layer, detail layer), each standardised
   by its spread over training codes (:func:`readout_scales`). Readouts cost no rendering.
2. image fine-tuning: MSE of the toy generator's image of the encoded code to the input image (the
   generator is differentiable), which weighs every direction by what it does to the image, plus
   ``regression_weight`` x phase 1's loss, which keeps the invisible directions where phase 1 put
   them and the readouts near the truth (the image alone trades, say, albedo against lighting).

Both return a loss of batch indices ``[b]`` into training images ``[n,3,64,64]`` (any float dtype)
and their codes ``[n,10,32]``, for :func:`ipsb.training.toy_networks.fit`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ipsb.backbone.toy.networks import ToyEncoder

BACKGROUND_ROW, DETAIL_ROW = 8, 9


def readouts(generator, wplus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W+ ``[B,10,32]`` -> (coefficients ``[B,30]``, background ``[B,3,R,R]``, detail ``[B,3,R,R]``):
    everything of a code the toy generator's image depends on, without rendering the face."""
    return (generator.coefficients(wplus), generator.background(wplus[:, BACKGROUND_ROW]),
            generator.detail(wplus[:, DETAIL_ROW]))


@torch.no_grad()
def readout_scales(generator, wplus: torch.Tensor) -> dict:
    """Spread of :func:`readouts` over training codes ``wplus [n,10,32]``: coefficient std ``[30]``
    (at least 1e-3: a fixed coefficient) and the mean per-pixel variance of the background and detail
    layers."""
    coeffs, background, detail = readouts(generator, wplus)
    return {"coeff_std": coeffs.std(0).clamp_min(1e-3),
            "background_var": background.var(0).mean(), "detail_var": detail.var(0).mean()}


def readout_loss(generator, pred: torch.Tensor, true: torch.Tensor, scales: dict) -> torch.Tensor:
    """Standardised MSE of the readouts of W+ codes ``pred`` and ``true`` ``[B,10,32]`` (one term each
    for coefficients, background and detail, so each counts as much as the others)."""
    (cp, bp, dp), (ct, bt, dt) = readouts(generator, pred), readouts(generator, true)
    return (F.mse_loss(cp / scales["coeff_std"], ct / scales["coeff_std"])
            + F.mse_loss(bp, bt) / scales["background_var"] + F.mse_loss(dp, dt) / scales["detail_var"])


def _standardised(encoder: ToyEncoder, wplus: torch.Tensor) -> torch.Tensor:
    return (wplus - encoder.latent_avg) / encoder.latent_scale


def regression_loss(encoder: ToyEncoder, generator, offsets: torch.Tensor, wplus: torch.Tensor,
                    readout_weight: float, scales: dict) -> torch.Tensor:
    """Phase 1's loss of predicted standardised offsets ``[B,10,32]`` for true codes ``wplus [B,10,32]``:
    ``MSE(offsets, standardised code) + readout_weight * readout_loss``."""
    out = F.mse_loss(offsets, (wplus - encoder.latent_avg) / encoder.latent_scale)
    if readout_weight:
        pred = encoder.latent_avg + encoder.latent_scale * offsets
        out = out + readout_weight * readout_loss(generator, pred, wplus, scales)
    return out


def wplus_regression_loss(encoder: ToyEncoder, generator, images: torch.Tensor, wplus: torch.Tensor,
                          readout_weight: float, scales: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """Phase 1: :func:`regression_loss` of ``encoder(images[i])``."""
    return lambda i: regression_loss(encoder, generator, encoder(images[i].float()), wplus[i], readout_weight, scales)


def image_loss(encoder: ToyEncoder, generator, images: torch.Tensor, wplus: torch.Tensor, regression_weight: float,
               readout_weight: float, scales: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """Phase 2: ``MSE(generator(encode(x)), x) + regression_weight * regression_loss`` for ``x = images[i]``
    (the frozen ``generator`` renders with ``noise_mode="const"``, as the training images were)."""
    def loss(i: torch.Tensor) -> torch.Tensor:
        x = images[i].float()
        offsets = encoder(x)
        recon = generator.synthesis(encoder.latent_avg + encoder.latent_scale * offsets, noise_mode="const")
        return F.mse_loss(recon, x) + regression_weight * regression_loss(encoder, generator, offsets, wplus[i],
                                                                          readout_weight, scales)

    return loss
