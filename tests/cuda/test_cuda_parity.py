"""Device parity: each piece of ipsb run on ``device`` (CUDA) gives its CPU result.

Every test builds one seeded float32 piece, runs it on CPU and on ``device`` (a deep copy moved
there, same inputs) and compares, or trains a stage a few steps on ``device`` through Lightning and
checks what must hold. TF32 is off (``conftest.py``). Tolerances are relative to ``max|reference|``:

* ``REL`` (1e-3): dense float32 networks (convs, linear layers, LPIPS, Jacobians).
* rendered images of the toy world (``assert_render_close``): all but ``RENDER_OUTLIERS`` of the
  values within ``RENDER_TOL``. The soft renderer's z-buffer weights ``exp(cov * inv_depth / 0.02)``
  amplify float32 rounding (CPU float32 vs float64: up to ~1.5e-4 on single pixels of [-1,1]
  images), and it keeps the 16 faces nearest each 4x4-pixel tile (``topk``): at a near-tie for the
  16th place (about 1 tile in 10^4) another device may keep another face and change that tile.

Without CUDA every test skips; ``IPSB_TEST_DEVICE=cpu`` runs the same logic CPU-vs-CPU.
pytorch3d is never imported; alignment (dlib) is not used, the swap path starts from W+ codes.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from torch import nn

from basis_tiny import TINY_COEFF_GROUPS, tiny_world
from helpers.blend_world import cached_checkpoints
from helpers.swap_world import save_oracle_basis, toy_backbone

pytestmark = pytest.mark.cuda

REPO = Path(__file__).resolve().parents[2]
REL = 1e-3
RENDER_TOL, RENDER_OUTLIERS = 5e-3, 0.02


def assert_close(out: torch.Tensor, ref: torch.Tensor, rel: float = REL, what: str = "") -> None:
    """``max|out - ref| <= rel * max|ref|`` (compared on CPU in float64)."""
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    assert torch.isfinite(out).all(), f"{what}: non-finite values on the device"
    scale = float(ref.abs().max())
    err = float((out - ref).abs().max())
    assert err <= rel * max(scale, 1e-12), f"{what}: max|diff| {err:.3g} > {rel} * max|ref| {scale:.3g}"


def assert_render_close(out: torch.Tensor, ref: torch.Tensor, what: str = "") -> None:
    """Toy-world renders: at most ``RENDER_OUTLIERS`` of the values differ by more than
    ``RENDER_TOL * max|ref|`` (one tile whose 16 nearest faces tie differently; module docstring)."""
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    assert torch.isfinite(out).all(), f"{what}: non-finite values on the device"
    diff = (out - ref).abs()
    far = float((diff > RENDER_TOL * float(ref.abs().max())).double().mean())
    assert far <= RENDER_OUTLIERS, (f"{what}: {far:.2%} of the values differ by more than {RENDER_TOL} * max|ref| "
                                    f"(max |diff| {float(diff.max()):.3g}, mean {float(diff.mean()):.3g})")


def on(module: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``module`` moved to ``device`` (the original stays on CPU)."""
    return copy.deepcopy(module).to(device)


def tensors_of(module: nn.Module):
    """``(name, tensor)`` for every parameter, buffer and plain tensor attribute of every submodule."""
    for prefix, m in module.named_modules():
        for name, value in vars(m).items():
            if isinstance(value, torch.Tensor):
                yield f"{prefix}.{name}", value
        for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if t is not None:
                yield f"{prefix}.{name}", t


# ------------------------------------------------------------------------------------------ backbone

def test_stylegan2_tiny_synthesis(device):
    from ipsb.backbone.interfaces import freeze
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    g = freeze(StyleGAN2Generator(32, w_dim=32, n_mlp=2, channel_base=512, channel_max=16))
    gd = on(g, device)
    w = torch.randn(3, g.num_ws, g.w_dim, generator=torch.Generator().manual_seed(1))
    z = torch.randn(3, g.w_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        img, feats = g.synthesis(w, noise_mode="const", return_features=True)
        img_d, feats_d = gd.synthesis(w.to(device), noise_mode="const", return_features=True)
        assert img_d.device == device
        assert_close(img_d, img, what="synthesis")
        for r in feats:
            assert_close(feats_d[r], feats[r], what=f"features {r}")
        assert_close(gd.mapping(z.to(device), truncation_psi=0.7), g.mapping(z, truncation_psi=0.7), what="mapping")
        assert_close(gd(z.to(device)), g(z), what="z -> image")


def test_toy_generator_and_networks(device):
    from ipsb.backbone.toy.generator import ToyGenerator
    from ipsb.backbone.toy.networks import ToyIdentity, ToyMasker, ToyRegressor

    g = ToyGenerator(seed=0).eval()
    gd = on(g, device)
    w = g.sample_wplus(4, seed=1, mix=True)
    with torch.no_grad():
        assert_close(gd.sample_wplus(4, seed=1, mix=True), w, what="sample_wplus")
        img = g.synthesis(w)
        img_d = gd.synthesis(w.to(device))
        assert img_d.device == device
        assert_render_close(img_d, img, "toy synthesis")
        _, feats = g.synthesis(w, return_features=True)
        _, feats_d = gd.synthesis(w.to(device), return_features=True)
        for r in feats:
            assert_render_close(feats_d[r], feats[r], f"toy features {r}")
        assert_close(gd.coefficients(w.to(device)), g.coefficients(w), what="coefficients")
        for net in (ToyRegressor(), ToyIdentity(), ToyMasker()):
            net = net.eval()
            out = net(img)                                   # the same CPU image on both devices
            out_d = on(net, device)(img.to(device))
            assert out_d.device == device
            assert_close(out_d, out, what=type(net).__name__)


def test_toy_backbone_moves_whole_and_stays_frozen(device):
    from ipsb.backbone.bundle import FaceBackbone

    torch.manual_seed(0)
    bb = FaceBackbone.from_config(REPO / "lightning_configs" / "backbone" / "toy.yaml")
    bd = on(bb, device)
    elsewhere = [name for name, t in tensors_of(bd) if t.device != device]
    assert not elsewhere, f"not on {device}: {elsewhere}"
    bd.train()
    assert not bd.training and not any(m.training for m in bd.modules())
    assert all(not p.requires_grad for p in bd.parameters())
    with torch.no_grad():
        w = bb.sample_wplus(2, seed=1)
        w_d = bd.sample_wplus(2, seed=1)
        assert w_d.device == device
        assert_close(w_d, w, what="sample_wplus")
        img, img_d = bb.synthesize(w), bd.synthesize(w_d)
        assert_render_close(img_d, img, "synthesize")
        assert_close(bd.coeffs(img.to(device)), bb.coeffs(img), what="coeffs")
        assert_close(bd.embed(img.to(device)), bb.embed(img), what="embed")
        assert_close(bd.face_mask(img.to(device)), bb.face_mask(img), what="face_mask")
        assert_close(bd.lpips(img.to(device), img.flip(0).to(device)), bb.lpips(img, img.flip(0)), what="lpips")
        coeffs = bb.coeffs(img)
        ref, out = bb.render_coeffs(coeffs), bd.render_coeffs(coeffs.to(device))
        assert_render_close(out.image, ref.image, "render image")
        assert_render_close(out.mask, ref.mask, "render mask")


def test_lpips_random_backbone(device):
    from ipsb.backbone.perceptual import Perceptual
    from ipsb.losses.perceptual import perceptual_distance

    torch.manual_seed(0)
    p = Perceptual(net="alex", pnet_rand=True)
    pd = on(p, device)
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    b = (a + 0.3 * torch.randn(3, 3, 64, 64, generator=gen)).clamp(-1, 1)
    mask = (torch.rand(3, 1, 64, 64, generator=gen) > 0.3).float()
    with torch.no_grad():
        ref = p(a, b)
        assert (ref > 0).all()
        assert_close(pd(a.to(device), b.to(device)), ref, what="lpips")
        assert_close(perceptual_distance(pd, a.to(device), b.to(device), mask.to(device)),
                     perceptual_distance(p, a, b, mask), what="masked perceptual distance")


# ------------------------------------------------------------------------------------------ basis

def test_basis_jacobian_gram_and_solve(device):
    from ipsb.basis.accumulator import GramAccumulator
    from ipsb.basis.layers import layer_mask
    from ipsb.basis.probe import DEFAULT_ATTRIBUTE_GROUPS, AttributeProbe, coefficient_columns
    from ipsb.basis.solve import solve_basis

    gen, reg, ident = tiny_world(torch.float32)
    mask = layer_mask("1..4", gen.num_ws)
    cols = coefficient_columns(TINY_COEFF_GROUPS, DEFAULT_ATTRIBUTE_GROUPS)
    probe = AttributeProbe(gen, reg, cols, ident, mask, chunk_size=3)
    probe_d = on(probe, device)
    z = torch.randn(6, gen.w_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w0 = gen.mapping(z)[:, None].repeat(1, gen.num_ws, 1)
    w0 = w0 + 0.1 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(1))
    n = int(mask.sum()) * gen.w_dim
    k = {"pose": 2, "exp": 3, "light": 2}

    def run(p, dev):
        acc = GramAccumulator(p.groups, n, device=dev)
        jacs = [p(w0[:3].to(dev)), p(w0[3:].to(dev))]
        for j in jacs:
            acc.update(j)
        grams = acc.mean()
        return jacs, grams, solve_basis(grams, k, mask, gen.w_dim)

    jacs, grams, basis = run(probe, torch.device("cpu"))
    jacs_d, grams_d, basis_d = run(probe_d, device)
    for j, j_d in zip(jacs, jacs_d):
        for g in probe.groups:
            assert j_d[g].device == device and j_d[g].dtype == torch.float32
            assert_close(j_d[g], j[g], what=f"Jacobian {g}")
    for g in probe.groups:
        assert grams_d[g].dtype == torch.float64
        assert_close(grams_d[g], grams[g], what=f"Gram {g}")
    assert basis_d.groups == basis.groups and basis_d.layer_mask.tolist() == basis.layer_mask.tolist()
    v, v_d = basis.V.double(), basis_d.V.double().cpu()
    assert torch.allclose(v_d.T @ v_d, torch.eye(v.shape[1], dtype=torch.float64), atol=1e-5)
    for g, (a, b) in basis.groups.items():       # the same subspace per group (up to signs/rotation)
        p_ref, p_dev = v[:, a:b] @ v[:, a:b].T, v_d[:, a:b] @ v_d[:, a:b].T
        dist = float(torch.linalg.matrix_norm(p_dev - p_ref, ord=2))
        assert dist <= 1e-3, f"basis group {g}: subspace distance {dist:.3g}"
        assert_close(basis_d.eigenvalues[g], basis.eigenvalues[g], what=f"eigenvalues {g}")


# ------------------------------------------------------------------------------------------ metrics

class TinyFeatures(nn.Module):
    """Seeded feature network for FID: image ``[B,3,H,W]`` in [-1,1] -> ``[B,6]`` (about +-10)."""

    num_features = 6

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Tanh(), nn.Conv2d(8, 8, 3, 2, 1), nn.Tanh(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6))

    def forward(self, x):
        return 10 * self.net(x)


def _metric_pair(metric, device, *updates):
    """Feed ``updates`` (``(method name, *args)``, CPU tensors) to ``metric`` and to a copy on ``device``;
    returns both computed results."""
    dev_metric = copy.deepcopy(metric).to(device)
    for name, *args in updates:
        getattr(metric, name)(*args)
        getattr(dev_metric, name)(*[a.to(device) if isinstance(a, torch.Tensor) else a for a in args])
    return metric.compute(), dev_metric.compute()


def test_metrics(device):
    from ipsb.metrics.expression_error import ExpressionError
    from ipsb.metrics.fid import FID
    from ipsb.metrics.id_retrieval import IDRetrieval, IDSimilarity
    from ipsb.metrics.pose_error import PoseError

    gen = torch.Generator().manual_seed(0)
    gallery = torch.randn(24, 16, generator=gen)
    videos = torch.arange(12).repeat_interleave(2)
    query_video = torch.randint(12, (20,), generator=gen)
    queries = gallery[2 * query_video] + 2.0 * torch.randn(20, 16, generator=gen)   # cosine gaps >= 5e-3
    idx = torch.arange(20)
    ref, out = _metric_pair(IDRetrieval(top_k=(1, 5), chunk_size=7), device,
                            ("update_gallery", gallery, videos, torch.arange(24)),
                            ("update", queries[:12], query_video[:12], idx[:12]),
                            ("update", queries[12:], query_video[12:], idx[12:]),
                            ("update", queries[:2], query_video[:2], idx[:2]))          # padding repeat
    assert 0 < float(ref["top1"]) < float(ref["top5"]) < 1, ref    # a non-trivial ranking (0.45, 0.95)
    for key in ref:
        assert out[key].device == device and float(out[key]) == float(ref[key]), key
    ref, out = _metric_pair(IDSimilarity(), device, ("update", queries, gallery[2 * query_video], idx))
    assert_close(out, ref, 1e-5, "IDSimilarity")
    exp_s, exp_t = torch.randn(20, 64, generator=gen), torch.randn(20, 64, generator=gen)
    ref, out = _metric_pair(ExpressionError(), device, ("update", exp_s, exp_t, idx))
    for key in ref:
        assert_close(out[key], ref[key], 1e-5, f"ExpressionError {key}")
    pose_s, pose_t = 3 * torch.randn(20, 3, 66, generator=gen), 3 * torch.randn(20, 3, 66, generator=gen)
    ref, out = _metric_pair(PoseError(inputs="logits"), device, ("update", pose_s, pose_t, idx))
    for key in ("deg_l2", "bin_sqrt_mse"):
        assert_close(out[key], ref[key], 1e-5, f"PoseError {key}")
    real = torch.rand(24, 3, 16, 16, generator=gen) * 2 - 1
    fake = (0.7 * real[:20] + 0.2).clamp(-1, 1)
    ref, out = _metric_pair(FID(feature=TinyFeatures()), device,
                            ("update", real, True, torch.arange(24)), ("update", fake, False, idx))
    assert float(ref) > 0.05, ref
    assert_close(out, ref, 1e-3, "FID")


# ------------------------------------------------------------------------------------------ stages

class Record(Callback):
    """Training-step losses and the devices the step ran on."""

    def __init__(self):
        self.losses, self.devices = [], set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))
        self.devices |= {batch["w_s"].device, pl_module.device, next(pl_module.backbone.buffers()).device}


def fit_on(module, device: torch.device, root: Path, steps: int = 2) -> Record:
    """``steps`` training steps of a pair stage on ``device`` (batch 2, no validation/logger/checkpoints)."""
    from ipsb.data.latents import LatentPairDataModule

    record = Record()
    trainer = Trainer(accelerator="gpu" if device.type == "cuda" else "cpu",
                      devices=[device.index] if device.type == "cuda" else 1, max_steps=steps, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, deterministic=False, callbacks=[record],
                      default_root_dir=str(root))
    trainer.fit(module, LatentPairDataModule(num_train_pairs=2 * steps, num_val_pairs=2, batch_size=2,
                                             val_batch_size=2, truncation_psi=0.7, seed=0))
    return record


def check_stage_run(module, device: torch.device, root: Path) -> None:
    """Train on ``device``: finite losses; trainable weights moved; frozen weights and backbone did not."""
    trainable = {n: p.detach().cpu().clone() for n, p in module.named_parameters()
                 if not n.startswith("backbone.") and p.requires_grad}
    frozen = {n: p.detach().cpu().clone() for n, p in module.named_parameters()
              if not n.startswith("backbone.") and not p.requires_grad}
    backbone = {k: v.detach().cpu().clone() for k, v in module.backbone.state_dict().items()}
    assert trainable, "nothing to train"
    record = fit_on(module, device, root)
    assert record.devices == {device}, record.devices
    assert len(record.losses) == 2 and all(math.isfinite(x) for x in record.losses), record.losses
    after = {n: p.detach().cpu() for n, p in module.named_parameters()}
    assert any(not torch.equal(after[n], v) for n, v in trainable.items()), "no trainable weight changed"
    assert all(torch.equal(after[n], v) for n, v in frozen.items()), "a frozen stage weight changed"
    state = module.backbone.state_dict()
    assert all(torch.equal(state[k].cpu(), v) for k, v in backbone.items()), "the backbone changed"
    assert all(not p.requires_grad and p.grad is None for p in module.backbone.parameters())
    assert not module.backbone.training


@pytest.fixture(scope="module")
def stage_ckpts(device, tmp_path_factory):
    """CPU-trained stage-1/2/3 checkpoints of the toy world (shared with the stage/swap tests)."""
    return cached_checkpoints(tmp_path_factory)


def test_mapping_stage_trains_on_device(device, tmp_path):
    from ipsb.stages.base import adamw
    from ipsb.stages.mapping_module import MappingModule

    basis = save_oracle_basis(tmp_path / "basis.pt")
    seed_everything(0)
    module = MappingModule(copy.deepcopy(toy_backbone()), basis=str(basis), hidden_dim=32, depth=2,
                           optimizer=adamw(1e-2))
    check_stage_run(module, device, tmp_path)


def test_detail_stage_trains_on_device(device, stage_ckpts, tmp_path):
    from ipsb.stages.base import adamw
    from ipsb.stages.detail_module import DetailModule

    seed_everything(0)
    module = DetailModule(copy.deepcopy(toy_backbone()), mapping_checkpoint=str(stage_ckpts["mapping"]),
                          optimizer=adamw(0.05))
    check_stage_run(module, device, tmp_path)


def test_blend_stage_trains_on_device(device, stage_ckpts, tmp_path):
    from ipsb.stages.base import adamw
    from ipsb.stages.blend_module import BlendModule

    seed_everything(0)
    module = BlendModule(copy.deepcopy(toy_backbone()), detail_checkpoint=str(stage_ckpts["detail"]),
                         optimizer=adamw(1e-2),
                         hidden=8)
    check_stage_run(module, device, tmp_path)


# ------------------------------------------------------------------------------------------ swap

def test_swap_pairs_on_device(device, stage_ckpts):
    """Stages 1-3 of the FaceSwapper (from W+ codes: no dlib, no inversion) on ``device`` == CPU."""
    from ipsb.swap import FaceSwapper, swap_pairs

    swapper = FaceSwapper.from_checkpoints(stage_ckpts["mapping"], stage_ckpts["detail"], stage_ckpts["blend"],
                                           copy.deepcopy(toy_backbone()), invert_steps=4, invert_perceptual=0.0)
    swapper_d = on(swapper, device)
    assert swapper_d.device == device and swapper.device == torch.device("cpu")
    bb, fm = swapper.backbone, swapper.face_mask
    # The face mask thresholds the masker's output: take the 2 targets (of 32) whose output keeps the
    # farthest from the threshold, so float noise cannot flip mask pixels (a real, local difference).
    candidates = bb.sample_wplus(32, seed=12, truncation_psi=0.7)
    with torch.no_grad():
        raw = fm.raw(bb, bb.generator.synthesis(candidates, noise_mode=swapper.noise_mode))
    margin = (raw - fm.threshold).abs().flatten(1).amin(1)
    keep = margin.argsort(descending=True)[:2]
    assert float(margin[keep].min()) > 2e-3, f"no 2 target codes with a clear mask margin: {margin}"
    w_t = candidates[keep]
    w_s = bb.sample_wplus(2, seed=11, truncation_psi=0.7)
    ref = swap_pairs(swapper, w_s, w_t)
    out = swap_pairs(swapper_d, w_s, w_t)                   # CPU codes: the swapper moves them
    assert list(out) == ["source", "target", "stage1", "stage2", "final"]
    assert (ref["final"] - ref["stage2"]).abs().mean() > 1e-4      # stage 3 did something
    for key in ref:
        assert out[key].device == device, key
        assert_render_close(out[key], ref[key], key)
