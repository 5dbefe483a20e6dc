"""The shipped toy W+ encoder: the toy backbone's ``encoder``, one forward pass that inverts held-out
toy images at least as well as 10 optimisation steps of ``FaceSwapper.invert`` and at least 10x
faster; ``ipsb toy-report`` prints its reconstruction next to the mean latent's."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from ipsb.backbone.bundle import FaceBackbone
from ipsb.backbone.toy import world
from ipsb.backbone.toy.data import render_samples
from ipsb.backbone.toy.networks import ASSETS, ToyEncoder
from ipsb.backbone.toy.report import ENCODER_TRUNCATION, reconstruction_errors
from ipsb.cli import main as ipsb_main
from ipsb.nets.layer_lambda import LayerLambda
from ipsb.nets.mapper import CoeffMapper, SwapEditor
from ipsb.stages.detail_module import StageTwoSwap
from ipsb.swap import FaceSwapper

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs" / "backbone"


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)                               # the random LPIPS network (pnet_rand) is seeded
    return FaceBackbone.from_config(CONFIGS / "toy.yaml")


@pytest.fixture(scope="module")
def held_out(toy):
    """8 toy images of codes with independent rows at truncation 0.7 (seed unused in training)."""
    return render_samples(toy.generator, 8, seed=4321, mixed_only=True, truncation_psi=ENCODER_TRUNCATION)


def inverter(backbone: FaceBackbone, **kwargs) -> FaceSwapper:
    """A FaceSwapper used for its inversion only (its untrained stages are never called)."""
    mapper = CoeffMapper(world.coeff_slices(), world.NUM_COEFFS, out_dim=1, hidden_dim=4, depth=1)
    editor = SwapEditor(mapper, torch.zeros(world.NUM_WS * world.W_DIM, 1), world.NUM_WS, world.W_DIM)
    return FaceSwapper(backbone, StageTwoSwap(editor, LayerLambda(world.NUM_WS)), **kwargs)


def test_toy_backbone_encoder_is_the_shipped_toy_encoder(toy, held_out):
    assert isinstance(toy.encoder, ToyEncoder) and Path(toy.encoder.checkpoint_path) == ASSETS / "encoder.pt"
    assert not any(p.requires_grad for p in toy.encoder.parameters()) and not toy.encoder.training
    torch.load(toy.encoder.checkpoint_path, weights_only=True)
    # its stored latent statistics are the toy generator's (float16 round-off)
    torch.testing.assert_close(toy.encoder.latent_avg, toy.generator.w_avg, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(toy.encoder.latent_scale, toy.generator.w_std, rtol=1e-3, atol=0)
    w = toy.encode(held_out["image"])
    assert w.shape == (8, world.NUM_WS, world.W_DIM)
    # other sizes are resized to 64 px: a 128 px copy reconstructs nearly as well
    big = torch.nn.functional.interpolate(held_out["image"], scale_factor=2.0, mode="bilinear", align_corners=False)
    mse = lambda code: float((toy.synthesize(code) - held_out["image"]).pow(2).mean())
    assert mse(toy.encode(big)) < 1.5 * mse(w)


def test_toy_encoder_inverts_as_well_as_10_optimisation_steps_and_10x_faster(toy, held_out):
    image = held_out["image"]
    encoder, optimiser = inverter(toy), inverter(toy, inversion="optimize", invert_steps=10)
    assert encoder.uses_encoder() and not optimiser.uses_encoder()
    assert (optimiser.invert_lr, optimiser.invert_perceptual) == (0.05, 1.0)   # FaceSwapper's defaults
    encoder.invert(image[:1])                                                   # warm-up
    t0 = time.perf_counter()
    w_enc = encoder.invert(image)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    w_opt = optimiser.invert(image)
    t_opt = time.perf_counter() - t0
    torch.testing.assert_close(w_enc, toy.encode(image))                        # one forward pass
    enc = reconstruction_errors(toy.generator, w_enc, image, held_out["wplus"])
    opt = reconstruction_errors(toy.generator, w_opt, image, held_out["wplus"])
    print(f"encoder {enc}, 10 optimisation steps {opt}, time ratio {t_opt / t_enc:.0f}x")
    assert enc["image_mse"] <= opt["image_mse"], (enc, opt)
    assert enc["edit_rel_err"] < opt["edit_rel_err"], (enc, opt)
    assert t_opt / t_enc >= 10, (t_opt, t_enc)


def test_toy_report_prints_the_encoder_reconstruction(capsys):
    assert ipsb_main(["toy-report", "--n", "32"]) == 0
    out = capsys.readouterr().out
    values = {}
    for key in ("encoder_image_mse", "encoder_wplus_mse", "encoder_edit_rel_err"):
        m = re.search(rf"^{key}\s+([0-9.e-]+)\s+< ([0-9.e-]+) \(the mean latent's\)", out, re.M)
        assert m, (key, out)
        values[key] = float(m[1]), float(m[2])
    assert "rows 3..7" in out and "r2_exp" in out and "mask_iou" in out
    for key, (encoder, mean_latent) in values.items():
        assert encoder < mean_latent, (key, out)
    assert values["encoder_image_mse"][0] < 0.2 * values["encoder_image_mse"][1]
    assert values["encoder_edit_rel_err"][1] == pytest.approx(1.0)
