"""The GPU benchmark suite: synthesis, basis, stage training, FF++ evaluation and video swap, one table.

Every row is timed in this run against a named baseline row of the same section (``speedup``):

* **synthesis** img/s of StyleGAN2 (``torch.no_grad``): eager float32 (baseline), bf16 autocast,
  bf16 + channels-last, ``torch.compile`` (float32);
* **basis** seconds per sample (the :class:`~ipsb.basis.probe.AttributeProbe` work of one
  :class:`~ipsb.stages.basis_module.BasisModule` step: pose 3 + expression 64 + lighting 27 3DMM rows
  and the identity rows over W+ layers 3..9), ``identity_rows`` = ``exact`` (baseline),
  ``lowrank:Q``, ``sketch:K``; and the time of a 1000-sample basis extrapolated from it;
* **stages** training steps/s at batch 8 (mapping, detail, blend; ``32-true`` baseline and
  ``bf16-mixed``), through Lightning's ``Trainer.fit`` (the first step, which builds and warms up, is
  not timed);
* **FF++ evaluation** frames/s: the per-frame metric work of the FF++ harness (identity embedding
  for ID retrieval, 3DMM expression, head pose) at 256 px;
* **swap video** frames/s: ``FaceSwapper.swap_video`` (what ``ipsb swap`` runs on a video: decode,
  FFHQ alignment warp, inversion warm-started from the previous frame, stages 1-3, paste, encode) on
  a synthetic clip, with fixed landmarks in place of dlib's detector (CPU-bound, not what the suite
  measures);

and the peak memory of each row (CUDA: ``torch.cuda.max_memory_allocated`` over the row, weights
included; CPU: resident-set growth, sampled).

Stand-ins: the full-size official architectures (StyleGAN2 config-f at 1024, e4e, Deep3D's
ResNet-50, IR-SE50, BiSeNet, HopeNet, CosFace sphere20, LPIPS-alex, and a BFM-sized mesh of 35,721
vertices), built in memory with seeded random weights: the timings of real checkpoints, without
their files. ``--quick`` (CPU, the default test suite runs it): a tiny StyleGAN2 and the toy world's
backbone, batch 2, one timed step; no ``torch.compile`` (minutes on a CPU).

Files: only under ``--out`` (default: a temporary folder, deleted at the end); nothing in the
repository is read-write.

    python benchmarks/gpu_suite.py --device cuda [--out DIR] [--batch 8] [--chunk-size 16]
    python benchmarks/gpu_suite.py --quick
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.measure import PeakMemory, synchronize  # noqa: E402

from ipsb.backbone.interfaces import freeze  # noqa: E402


@dataclass
class Sizes:
    """What the suite builds and how long it measures."""

    quick: bool
    resolution: int = 1024
    batch: int = 8
    basis_layers: str = "3..9"
    identity_rows: tuple = ("lowrank:64", "sketch:64")
    synthesis_reps: int = 5
    stage_steps: int = 3            # timed steps after one untimed
    precisions: tuple = ("32-true", "bf16-mixed")
    clip_frames: int = 8
    invert_steps: int = 8
    compile: bool = True

    @classmethod
    def make(cls, quick: bool, batch: Optional[int], standin_resolution: Optional[int]) -> "Sizes":
        if quick:
            s = cls(True, resolution=32, batch=2, basis_layers="2..5", identity_rows=("lowrank:8", "sketch:8"),
                    synthesis_reps=2, stage_steps=1, precisions=("32-true",), clip_frames=3, invert_steps=2,
                    compile=False)
        else:
            s = cls(False)
        if batch:
            s.batch = batch
        if standin_resolution:
            s.resolution = standin_resolution
        return s


@dataclass
class Row:
    section: str
    name: str
    value: float                 # throughput (img/s, steps/s, frames/s) or seconds per sample
    unit: str
    peak_mib: float
    baseline: Optional[float] = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def speedup(self) -> Optional[float]:
        if self.baseline is None or not self.value:
            return None
        return self.baseline / self.value if self.unit == "s/sample" else self.value / self.baseline


# =============================================================================== stand-in backbone
def synthetic_bfm(grid: int = 189, seed: int = 0) -> dict:
    """A BFM-shaped face model (``grid**2`` vertices on a curved sheet, 80 id / 64 exp / 80 tex bases,
    68 keypoints, ``point_buf``) in the layout of :func:`ipsb.backbone.bfm_io.load_bfm`."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linspace(-1, 1, grid)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    zz = 0.6 * (1 - 0.5 * (xx ** 2 + yy ** 2))
    verts = torch.stack([xx, -yy * 1.2, zz], -1).reshape(-1, 3)            # decimetres, y up
    n = verts.shape[0]
    idx = torch.arange(n).reshape(grid, grid)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    faces = torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)])
    f = faces.shape[0]
    point_buf = torch.full((n, 8), f, dtype=torch.long)
    fill = torch.zeros(n, dtype=torch.long)
    for j, tri in enumerate(faces.tolist()):
        for v in tri:
            if fill[v] < 8:
                point_buf[v, fill[v]] = j
                fill[v] += 1
    keypoints = torch.randperm(n, generator=g)[:68]
    return {"mean_shape": verts.reshape(-1), "id_base": 1e-3 * torch.randn(3 * n, 80, generator=g),
            "exp_base": 1e-3 * torch.randn(3 * n, 64, generator=g), "mean_tex": torch.full((3 * n,), 160.0),
            "tex_base": torch.randn(3 * n, 80, generator=g), "faces": faces, "point_buf": point_buf,
            "keypoints": keypoints}


def standin_backbone(sizes: Sizes):
    """The FaceBackbone of the official architectures with seeded weights (``--quick``: the toy world's)."""
    from ipsb.backbone.bundle import FaceBackbone

    if sizes.quick:
        return FaceBackbone.from_config(REPO / "lightning_configs" / "backbone" / "toy.yaml")
    from ipsb.backbone.encoder import Encoder4Editing
    from ipsb.backbone.face_model import BFMFaceModel
    from ipsb.backbone.identity_irse import ir_se50
    from ipsb.backbone.parsing import BiSeNet
    from ipsb.backbone.perceptual import Perceptual
    from ipsb.backbone.pose import HopeNet
    from ipsb.backbone.recon import Deep3DRegressor
    from ipsb.backbone.renderer import MeshRenderer
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    generator = StyleGAN2Generator(sizes.resolution)
    encoder = Encoder4Editing(stylegan_size=sizes.resolution)
    encoder.latent_avg = generator.mean_latent(512).expand(generator.num_ws, -1).clone()
    backbone = FaceBackbone(generator, BFMFaceModel.from_tensors(synthetic_bfm()), MeshRenderer(224),
                            Deep3DRegressor(), ir_se50(), perceptual=Perceptual(net="alex", pnet_rand=True),
                            encoder=encoder, masker=BiSeNet(), pose=HopeNet())
    # stage checkpoints record their backbone's config; these stand-ins exist only in this process
    backbone.config = {"built_by": "benchmarks/gpu_suite.py:standin_backbone", "resolution": sizes.resolution}
    return backbone


def metric_networks(sizes: Sizes):
    """The FF++ metric networks: CosFace sphere20, Deep3D, HopeNet (``--quick``: the toy ones)."""
    from ipsb.eval.networks import MetricNetworks

    if sizes.quick:
        from ipsb.backbone.toy.networks import ToyIdentity, ToyRegressor
        from ipsb.eval.adapters import RegressorAnglePose

        reg = ToyRegressor()
        return MetricNetworks(ToyIdentity(), reg, RegressorAnglePose(reg))
    from ipsb.backbone.identity_sphere import sphere20
    from ipsb.backbone.pose import HopeNet
    from ipsb.backbone.recon import Deep3DRegressor

    torch.manual_seed(1)
    return MetricNetworks(sphere20(), Deep3DRegressor(), HopeNet())


# =============================================================================== measuring
def timed(fn: Callable[[], object], device: torch.device, reps: int) -> tuple[float, float]:
    """Median seconds of ``reps`` calls (after one warm-up call) and the peak MiB over them."""
    fn()
    times = []
    with PeakMemory(device) as mem:
        for _ in range(reps):
            synchronize(device)
            t = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t)
    return statistics.median(times), mem.peak_mib


def synthesis_rows(sizes: Sizes, device: torch.device) -> list[Row]:
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    if sizes.quick:
        gen = StyleGAN2Generator(sizes.resolution, w_dim=64, n_mlp=2, channel_base=1024, channel_max=32)
    else:
        gen = StyleGAN2Generator(sizes.resolution)
    gen = freeze(gen).to(device)
    with torch.no_grad():
        z = torch.randn(sizes.batch, gen.w_dim, generator=torch.Generator().manual_seed(1)).to(device)
        w = gen.mapping(z, 0.7)[:, None].repeat(1, gen.num_ws, 1)
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16)
    variants = [("eager float32", gen, False), ("bf16 autocast", gen, True),
                ("bf16 + channels_last", copy.deepcopy(gen).use_channels_last(), True)]
    if sizes.compile:
        variants.append(("torch.compile float32", copy.deepcopy(gen).compile_synthesis(), False))
    rows, base = [], None
    for name, g, half in variants:
        def run(g=g, half=half):
            with torch.no_grad(), (bf16 if half else _null()):
                return g.synthesis(w)
        sec, peak = timed(run, device, sizes.synthesis_reps)
        ips = sizes.batch / sec
        base = ips if base is None else base
        rows.append(Row("synthesis", f"{name} ({sizes.resolution} px, batch {sizes.batch})", ips, "img/s", peak,
                        None if name.startswith("eager") else base))
    if not sizes.compile:
        rows.append(Row("synthesis", "torch.compile float32", math.nan, "img/s", math.nan, note="skipped (--quick)"))
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def basis_rows(sizes: Sizes, backbone, device: torch.device, chunk_size: int, out: Path,
               specs: Optional[tuple] = None) -> tuple[list[Row], Path]:
    """Seconds per sample of the basis probe for ``exact`` and ``sizes.identity_rows`` (or ``specs``);
    also writes a basis from the first of them (one sample) for stage 1."""
    from ipsb.basis.accumulator import GramAccumulator
    from ipsb.basis.layers import layer_mask
    from ipsb.basis.probe import DEFAULT_ATTRIBUTE_GROUPS, AttributeProbe, coefficient_columns
    from ipsb.basis.solve import solve_basis

    gen = backbone.generator
    mask = layer_mask(sizes.basis_layers, gen.num_ws, device)
    groups = dict(DEFAULT_ATTRIBUTE_GROUPS)
    if sizes.quick:
        groups = {"pose": ["angle", "trans"], "exp": ["exp"], "light": ["gamma"]}
    columns = coefficient_columns(backbone.face_model.coeff_groups, groups)
    w0 = backbone.sample_wplus(2, seed=5, truncation_psi=0.7)
    probe = AttributeProbe(gen, backbone.regressor, columns, backbone.identity, mask, chunk_size, identity_rows="sketch:2")
    probe(w0[:1], [0])                                                    # warm-up (allocator, vmap)
    rows, base, grams = [], None, None
    for spec in specs or ("exact",) + tuple(sizes.identity_rows):
        probe = AttributeProbe(gen, backbone.regressor, columns, backbone.identity, mask, chunk_size,
                               identity_rows=spec)
        acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim, device)
        with PeakMemory(device) as mem:
            synchronize(device)
            t = time.perf_counter()
            acc.update(probe(w0[:1], [1]))
            synchronize(device)
            sec = time.perf_counter() - t
        passes = probe.last_passes
        base = sec if base is None else base
        rows.append(Row("basis", f"identity_rows {spec} ({passes['reverse']} reverse + {passes['forward']} "
                        f"forward passes)", sec, "s/sample", mem.peak_mib, None if not rows else base,
                        extra={"spec": spec}))
        if grams is None:
            grams = acc.mean()
    k = {"pose": 3, "exp": 6, "light": 3}
    basis = solve_basis(grams, k, mask.cpu(), gen.w_dim, delta=1e-3)
    path = basis.save(out / "basis.pt")
    return rows, path


class StepTimer:
    """Lightning callback: wall time of each training step (``synchronize`` around it) and peak memory."""

    def __init__(self, device: torch.device):
        from lightning.pytorch import Callback

        timer = self

        class _Callback(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                synchronize(device)
                if batch_idx == 1 and device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                timer._t = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                synchronize(device)
                timer.times.append(time.perf_counter() - timer._t)

        self.callback, self.times, self._t = _Callback(), [], 0.0


def stage_rows(sizes: Sizes, backbone, device: torch.device, basis: Path, out: Path) -> tuple[list[Row], dict]:
    from lightning.pytorch import Trainer, seed_everything

    from ipsb.data.latents import LatentPairDataModule
    from ipsb.stages.blend_module import BlendModule
    from ipsb.stages.detail_module import DetailModule
    from ipsb.stages.mapping_module import MappingModule

    ckpts: dict[str, Path] = {}
    builders = {
        "mapping": lambda: MappingModule(backbone, basis=str(basis)),
        "detail": lambda: DetailModule(backbone, mapping_checkpoint=str(ckpts["mapping"])),
        "blend": lambda: BlendModule(backbone, detail_checkpoint=str(ckpts["detail"]),
                                     mapping_checkpoint=str(ckpts["mapping"])),
    }
    rows = []
    for stage, build in builders.items():
        base = None
        for precision in sizes.precisions:
            seed_everything(0)
            module = build()
            timer = StepTimer(device)
            steps = 1 + sizes.stage_steps
            trainer = Trainer(accelerator="gpu" if device.type == "cuda" else "cpu",
                              devices=[device.index or 0] if device.type == "cuda" else 1, precision=precision,
                              max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                              callbacks=[timer.callback], default_root_dir=str(out / "runs" / stage))
            data = LatentPairDataModule(num_train_pairs=sizes.batch * steps, num_val_pairs=1, batch_size=sizes.batch,
                                        val_batch_size=1, truncation_psi=0.7, seed=0)
            with PeakMemory(device) as mem:
                trainer.fit(module, data)
            rate = 1.0 / statistics.median(timer.times[1:])
            base = rate if base is None else base
            rows.append(Row("stages", f"{stage} {precision} (batch {sizes.batch})", rate, "steps/s", mem.peak_mib,
                            None if precision == sizes.precisions[0] else base))
            if precision == sizes.precisions[0]:
                ckpts[stage] = out / "checkpoints" / f"{stage}.ckpt"
                trainer.save_checkpoint(str(ckpts[stage]))
            module.cpu()
            del module, trainer
            _free(device)
    return rows, ckpts


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def eval_rows(sizes: Sizes, device: torch.device) -> list[Row]:
    nets = freeze(metric_networks(sizes)).to(device)
    frames = torch.rand(sizes.batch, 3, 256, 256, generator=torch.Generator().manual_seed(2)).to(device) * 2 - 1

    def run():
        with torch.no_grad():
            nets.embed(frames), nets.expression(frames), nets.head_pose(frames)

    sec, peak = timed(run, device, max(2, sizes.synthesis_reps))
    row = Row("ffpp eval", f"metric networks, 256 px frames, batch {sizes.batch}", sizes.batch / sec, "frames/s",
              peak)
    nets.cpu()
    _free(device)
    return [row]


def swap_rows(sizes: Sizes, backbone, ckpts: dict, device: torch.device, out: Path) -> list[Row]:
    from ipsb.data.align import FaceAligner
    from ipsb.data.video import write_video
    from ipsb.swap import FaceSwapper

    class FixedLandmarks(FaceAligner):
        """dlib's detector replaced by fixed landmarks: eyes and mouth corners of a centred face."""

        def detect(self, image, name=None):
            h, w = np.asarray(image).shape[:2]
            lms = torch.zeros(68, 2)
            lms[:] = torch.tensor([0.5 * w, 0.55 * h])
            lms[36:42] = torch.tensor([0.38 * w, 0.42 * h])
            lms[42:48] = torch.tensor([0.62 * w, 0.42 * h])
            lms[48], lms[54] = torch.tensor([0.42 * w, 0.68 * h]), torch.tensor([0.58 * w, 0.68 * h])
            return lms

    size = 256
    gen = backbone.generator
    with torch.no_grad():
        w = backbone.sample_wplus(sizes.clip_frames + 1, seed=7, truncation_psi=0.7)
        faces = torch.cat([gen.synthesis(w[i:i + 1]) for i in range(w.shape[0])])
        faces = torch.nn.functional.interpolate(faces.float(), size=size, mode="bilinear", antialias=True)
    rgb = ((faces.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    clip, source = out / "clip.mp4", rgb[0]
    write_video(clip, list(rgb[1:]), fps=25)
    swapper = FaceSwapper.from_checkpoints(str(ckpts["mapping"]), str(ckpts["detail"]), str(ckpts["blend"]), backbone,
                                           aligner=FixedLandmarks(output_size=size), invert_steps=sizes.invert_steps)
    swapper = swapper.to(device)
    swapper.swap_video(source, clip, out / "warmup.mp4", progress=False)
    with PeakMemory(device) as mem:
        synchronize(device)
        t = time.perf_counter()
        report = swapper.swap_video(source, clip, out / "swapped.mp4", progress=False)
        synchronize(device)
        sec = time.perf_counter() - t
    how = "e4e encoder" if swapper.uses_encoder() else f"{sizes.invert_steps} optimisation steps"
    return [Row("swap video", f"{report.frames} frames of {size} px, inversion: {how}", report.frames / sec,
                "frames/s", mem.peak_mib)]


# =============================================================================== report
def print_table(rows: list[Row], device: torch.device, resolution: int) -> None:
    header = f"{'section':<11} {'what':<62} {'value':>10} {'unit':<9} {'speedup':>8} {'peak MiB':>9}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        value = "-" if math.isnan(r.value) else f"{r.value:10.3f}"
        speed = "" if r.speedup is None else f"{r.speedup:7.2f}x"
        peak = "-" if math.isnan(r.peak_mib) else f"{r.peak_mib:9.0f}"
        print(f"{r.section:<11} {r.name:<62} {value:>10} {r.unit:<9} {speed:>8} {peak:>9}  {r.note}")
    basis = [r for r in rows if r.section == "basis"]
    for r in basis:
        minutes = r.value * 1000 / 60
        print(f"1000-sample basis at {resolution} px, {r.extra['spec']}: {minutes:.1f} min on one {device.type} "
              f"device ({minutes / 8:.1f} min on 8)")
    print("speedup: against the section's first row (synthesis: eager float32; basis: exact; stages: 32-true).")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU-sized: tiny generator, toy world, one timed step")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--out", default=None, help="folder for everything the suite writes (default: a temp folder)")
    ap.add_argument("--batch", type=int, default=None, help="batch of synthesis, stages and evaluation (default 8)")
    ap.add_argument("--chunk-size", type=int, default=16, help="basis: Jacobian rows per vmapped reverse pass")
    ap.add_argument("--standin-resolution", type=int, default=None,
                    help="generator resolution of the stand-in backbone (default 1024; smaller for a smoke run)")
    ap.add_argument("--only", nargs="+", default=None,
                    choices=["synthesis", "basis", "stages", "eval", "swap"], help="run some sections")
    args = ap.parse_args(argv)
    import lightning.pytorch  # noqa: F401  (its import sets its loggers' levels: quieten them after it)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)                   # the table is the output
    warnings.filterwarnings("ignore")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu"))
    sizes = Sizes.make(args.quick, args.batch, args.standin_resolution)
    only = set(args.only or ["synthesis", "basis", "stages", "eval", "swap"])
    if "swap" in only:
        only.add("stages")                    # the swapper uses the stage checkpoints the stages write
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ipsb_gpu_suite_"))
    if out.exists() and any(out.iterdir()):
        print(f"gpu_suite: error: --out '{out}' is not empty; give an empty or new folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ipsb GPU suite ({'quick' if sizes.quick else 'full'}): device {device} ({name}), torch {torch.__version__}, "
          f"generator {sizes.resolution} px, batch {sizes.batch}, output folder {out}")
    rows: list[Row] = []
    backbone = ckpts = None
    try:
        if "synthesis" in only:
            rows += synthesis_rows(sizes, device)
        if only & {"basis", "stages", "swap"}:
            backbone = freeze(standin_backbone(sizes)).to(device)
            if "basis" in only:
                b_rows, basis = basis_rows(sizes, backbone, device, args.chunk_size, out)
                rows += b_rows
            else:   # a stage-1 basis from a cheap estimate: the stages' timings do not depend on it
                basis = basis_rows(sizes, backbone, device, args.chunk_size, out, specs=(sizes.identity_rows[-1],))[1]
        if "stages" in only:
            s_rows, ckpts = stage_rows(sizes, backbone, device, basis, out)
            rows += s_rows
        if "eval" in only:
            rows += eval_rows(sizes, device)
        if "swap" in only:
            rows += swap_rows(sizes, backbone, ckpts, device, out)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print_table(rows, device, backbone.generator.resolution if backbone is not None else sizes.resolution)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
