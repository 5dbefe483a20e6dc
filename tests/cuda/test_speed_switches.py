"""The GPU speed switches keep results within stated tolerances of float32, checked on CPU.

bf16 autocast runs on CPU too (``torch.autocast("cpu", torch.bfloat16)``, which is what Lightning's
``trainer.precision: bf16-mixed`` enters), so its tolerances are measured here; on a GPU the same
bf16 format gives errors of the same size. Tolerances (relative to ``max|float32 result|`` unless
stated; measured values in brackets):

* bf16 StyleGAN2 synthesis (64 px, 64 channels): ``BF16_IMAGE`` = 3e-2 [1.4e-2; mean 1e-2];
* bf16 metric networks: toy identity embedding cosine to float32 >= 0.9995 [0.99994], random-weight
  IR-SE50 >= 0.999 [0.99995]; toy 3DMM coefficients 3e-2 [1.2e-2];
* a toy stage's first training loss under ``bf16-mixed`` vs ``32-true``: 6e-2 relative [4.4e-2]: the
  toy generator's soft rasteriser amplifies rounding (z-buffer weights ``exp(cov * inv_depth / 0.02)``),
  which moves the regressed pose (geometry loss 0.277 vs 0.298); computing the 3DMM geometry and
  renders of the loss in float32 does not change it, the networks' inputs differ;
* channels_last synthesis: 1e-5 [1.2e-6]; compiled synthesis: 1e-5 [2e-6] (slow: compiling takes
  minutes on a busy CPU);
* :class:`~ipsb.callbacks.speed.SpeedSwitches` on a basis run (tiny float64 world): the same basis
  to 1e-9, and the global TF32 settings restored afterwards.

TF32 itself only exists on CUDA; on CPU the tests check the switch's settings, not its numbers.
"""
from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from ipsb.backbone.interfaces import freeze
from ipsb.backbone.stylegan2 import StyleGAN2Generator
from ipsb.callbacks.speed import SpeedSwitches

BF16_IMAGE = 3e-2


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    gen = freeze(StyleGAN2Generator(64, w_dim=64, n_mlp=2, channel_base=4096, channel_max=64))
    with torch.no_grad():
        w = gen.mapping(torch.randn(3, 64, generator=torch.Generator().manual_seed(1)), 0.7)
    return gen, w[:, None].repeat(1, gen.num_ws, 1)


def test_bf16_autocast_synthesis_within_tolerance(generator):
    gen, w = generator
    with torch.no_grad():
        ref = gen.synthesis(w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = gen.synthesis(w)
    err = _rel(out, ref)
    assert 1e-4 < err <= BF16_IMAGE, err           # bf16 really ran, and stayed close


def test_bf16_autocast_metric_networks_within_tolerance():
    import ipsb.backbone.toy as toy
    from ipsb.backbone.identity_irse import ir_se50
    from ipsb.backbone.toy.networks import ToyIdentity, ToyRegressor

    gen, reg, ident = freeze(toy.ToyGenerator()), freeze(ToyRegressor()), freeze(ToyIdentity())
    torch.manual_seed(0)
    irse = freeze(ir_se50())
    with torch.no_grad():
        image = gen.synthesis(gen.sample_wplus(6, seed=1, truncation_psi=0.7))
        face = torch.nn.functional.interpolate(image, size=256, mode="bilinear", align_corners=False)
        ref = ident(image), reg(image), irse(face)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ident(image), reg(image), irse(face)
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(out[0].float(), ref[0]).min()) >= 0.9995
    assert 1e-4 < _rel(out[1], ref[1]) <= 3e-2
    assert float(cos(out[2].float(), ref[2]).min()) >= 0.999


class FirstLoss(Callback):
    def __init__(self):
        self.loss = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.loss is None:
            self.loss = float((outputs["loss"] if isinstance(outputs, dict) else outputs).detach())


def test_stage_loss_under_bf16_mixed_within_tolerance(tmp_path):
    """Lightning's own bf16 switch on a toy stage: same init, same batch, loss within 6e-2."""
    from helpers.swap_world import save_oracle_basis, toy_backbone
    from ipsb.data.latents import LatentPairDataModule
    from ipsb.stages.base import adamw
    from ipsb.stages.mapping_module import MappingModule

    basis = save_oracle_basis(tmp_path / "basis.pt")
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        seed_everything(0)
        module = MappingModule(copy.deepcopy(toy_backbone()), basis=str(basis), hidden_dim=32, depth=2, optimizer=adamw(1e-2))
        record = FirstLoss()
        Trainer(accelerator="cpu", devices=1, max_steps=1, precision=precision, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                limit_val_batches=0, num_sanity_val_steps=0, callbacks=[record],
                default_root_dir=str(tmp_path)).fit(
            module, LatentPairDataModule(num_train_pairs=2, num_val_pairs=2, batch_size=2, val_batch_size=2,
                                         truncation_psi=0.7, seed=0))
        losses[precision] = record.loss
    ref, out = losses["32-true"], losses["bf16-mixed"]
    assert ref > 0 and 1e-5 * ref < abs(out - ref) <= 6e-2 * ref, losses     # bf16 ran, and stayed close


def test_channels_last_synthesis_matches(generator):
    gen, w = generator
    fast = copy.deepcopy(gen).use_channels_last()
    with torch.no_grad():
        ref, out = gen.synthesis(w), fast.synthesis(w)
        feats = fast.synthesis(w, return_features=True)[1]
    assert _rel(out, ref) <= 1e-5
    assert feats[64].is_contiguous(memory_format=torch.channels_last)
    assert gen.memory_format == torch.contiguous_format          # the original is untouched


@pytest.mark.slow
def test_compiled_synthesis_matches():
    torch.manual_seed(0)
    gen = freeze(StyleGAN2Generator(32, w_dim=32, n_mlp=2, channel_base=512, channel_max=16))
    w = torch.randn(2, gen.num_ws, 32, generator=torch.Generator().manual_seed(1))
    fast = copy.deepcopy(gen).compile_synthesis()
    with torch.no_grad():
        assert _rel(fast.synthesis(w), gen.synthesis(w)) <= 1e-5


def test_speed_switches_on_a_basis_run_keep_the_basis_and_restore_settings(tmp_path):
    from basis_ddp_run import run

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    ref = run(1, str(tmp_path / "ref.pt"))
    switches = SpeedSwitches(channels_last=True, tf32=not before[1])
    fast = run(1, str(tmp_path / "fast.pt"), callbacks=[switches])
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before
    for g in ref.basis.groups:
        torch.testing.assert_close(fast.basis.eigenvalues[g], ref.basis.eigenvalues[g], rtol=1e-9, atol=0)
        a, b = ref.basis.group_vectors(g).double(), fast.basis.group_vectors(g).double()
        assert float(torch.linalg.matrix_norm(a @ a.T - b @ b.T, ord=2)) <= 1e-6
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in fast.backbone.parameters() if p.dim() == 4)


def test_speed_switches_append_from_the_command_line():
    """docs/scaling.md's way to add the switches to a shipped config: ``--trainer.callbacks+=``."""
    import contextlib
    import io
    from pathlib import Path

    import yaml

    from ipsb.cli import main

    config = Path(__file__).resolve().parents[2] / "lightning_configs" / "mapping.yaml"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--trainer.precision", "bf16-mixed",
              "--trainer.callbacks+=ipsb.callbacks.speed.SpeedSwitches", "--trainer.callbacks.channels_last=true",
              "--trainer.callbacks.tf32=true", "--print_config"])
    trainer = yaml.safe_load(out.getvalue())["trainer"]
    assert trainer["precision"] == "bf16-mixed"
    speed = [c for c in trainer["callbacks"] if c["class_path"] == "ipsb.callbacks.speed.SpeedSwitches"]
    assert speed and speed[0]["init_args"]["channels_last"] is True and speed[0]["init_args"]["tf32"] is True
    assert any(c["class_path"].endswith("ModelCheckpoint") for c in trainer["callbacks"])   # the config's stay
