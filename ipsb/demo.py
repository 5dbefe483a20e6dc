"""``ipsb demo``: the whole method end to end on the embedded default, the toy world, on CPU.

1. trains, in-process with Lightning Trainers and the stage configs in ``lightning_configs/toy/``
   (``basis.yaml``, ``mapping.yaml``, ``detail.yaml``, ``blend.yaml``; model and data sections,
   with step counts shortened and paths moved into ``--out``): the StyleIPSB basis, stage 1
   (3DMM -> basis mapping), stage 2 (per-layer lambda) and stage 3 (MSFT blending);
2. swaps held-out toy pairs (W+ codes from seeds no stage trained on) with the resulting
   :class:`ipsb.swap.FaceSwapper` and writes ``grid.png``: one row per pair, five columns
   source | target | stage 1 | stage 2 | final;
3. runs the FF++ harness (:class:`ipsb.eval.evaluator.EvaluationModule`) on the synthetic toy FF++
   tree (:mod:`ipsb.data.toy_ffpp`): the ipsb swapper (inverting each aligned frame by optimisation)
   next to the toy manipulation's own videos, and writes ``ffpp_toy.md`` / ``ffpp_toy.json``;
4. prints where everything is.

``--fast`` shrinks every step count (tests). Existing results in ``--out`` are never replaced
unless ``--overwrite`` is given. Output layout: ``<out>/grid.png``, ``<out>/ffpp_toy.{md,json}``,
``<out>/checkpoints/{basis.pt,mapping.ckpt,detail.ckpt,blend.ckpt}``, ``<out>/ffpp/`` (toy tree).
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

REPO = Path(__file__).resolve().parent.parent
TOY_CONFIGS = REPO / "lightning_configs" / "toy"
BACKBONE_CONFIG = REPO / "lightning_configs" / "backbone" / "toy.yaml"

#: Fallback stage-3 config when ``lightning_configs/toy/blend.yaml`` is absent.
BLEND_FALLBACK = {"model": {"class_path": "ipsb.stages.blend_module.BlendModule", "init_args": {}},
                  "data": {"class_path": "ipsb.data.latents.LatentPairDataModule",
                           "init_args": {"num_train_pairs": 4096, "num_val_pairs": 16, "batch_size": 8,
                                         "val_batch_size": 16, "truncation_psi": 0.7, "seed": 2,
                                         "val_seed": 12345}}}


#: free space asked of ``--out`` before training (four toy stage checkpoints, the grid, the table)
MIN_FREE_BYTES = 32 << 20


@dataclass
class Budget:
    """Training lengths of one demo run."""

    basis_samples: int
    mapping_steps: int
    detail_steps: int
    blend_steps: int
    pairs: int
    invert_steps: int
    ffpp_videos: int
    ffpp_frames: int
    ffpp_slots: int
    batch_size: int


FULL = Budget(basis_samples=16, mapping_steps=100, detail_steps=30, blend_steps=30, pairs=6, invert_steps=10,
              ffpp_videos=3, ffpp_frames=6, ffpp_slots=2, batch_size=4)
FAST = Budget(basis_samples=8, mapping_steps=4, detail_steps=2, blend_steps=2, pairs=2, invert_steps=2,
              ffpp_videos=3, ffpp_frames=4, ffpp_slots=2, batch_size=2)


def _stage_config(name: str) -> dict:
    import yaml

    path = TOY_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        if name == "blend":
            return copy.deepcopy(BLEND_FALLBACK)
        raise FileNotFoundError(f"ipsb demo needs the stage config '{path}' (ships with the repository)")
    return yaml.safe_load(path.read_text())


def _fit(name: str, backbone, model_args: dict, data_args: dict, max_steps: Optional[int], ckpt: Optional[Path],
         log) -> object:
    """Build stage ``name`` from its toy config (+ overrides) and train it; save ``ckpt`` if given."""
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything

    from ipsb.config_objects import build

    cfg = _stage_config(name)
    seed_everything(int(cfg.get("seed_everything", 0)), verbose=False)
    margs = {k: v for k, v in dict(cfg["model"].get("init_args") or {}).items() if k != "backbone"}
    model = build({"class_path": cfg["model"]["class_path"],
                   "init_args": {**margs, **model_args, "backbone": backbone}}, LightningModule, f"{name} stage")
    data = build({"class_path": cfg["data"]["class_path"],
                  "init_args": {**dict(cfg["data"].get("init_args") or {}), **data_args}},
                 LightningDataModule, f"{name} data")
    limits = {"max_epochs": 1} if max_steps is None else {"max_steps": max_steps, "max_epochs": -1}
    from ipsb.checkpoint_io import AtomicCheckpointIO

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      plugins=[AtomicCheckpointIO()],
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, **limits)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(model, datamodule=data)
    if ckpt is not None:
        trainer.save_checkpoint(str(ckpt))
    log(f"  {name}: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU"
        + (f" -> {ckpt}" if ckpt else ""))
    return model


def to_uint8_grid(rows: list[list[torch.Tensor]], tile: int, padding: int) -> torch.Tensor:
    """``rows`` of ``[3,R,R]`` images in [-1,1] -> uint8 grid ``[3,H,W]`` (``W = cols*tile + (cols+1)*padding``)."""
    from torchvision.utils import make_grid

    cols = len(rows[0])
    tiles = [torch.nn.functional.interpolate(img[None].float().cpu(), size=(tile, tile), mode="nearest")[0]
             for row in rows for img in row]
    grid = make_grid([(t.clamp(-1, 1) + 1) / 2 for t in tiles], nrow=cols, padding=padding, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def run_demo(out: str | Path = "outputs/demo", overwrite: bool = False, fast: bool = False, tile: int = 128,
             threads: int = 1, padding: int = 4, log=print) -> dict:
    """The demo (module docstring); returns ``{"grid", "table_md", "table_json", "checkpoints", "seconds"}``."""
    from PIL import Image

    from ipsb.backbone.bundle import FaceBackbone
    from ipsb.data.simple_aligners import CenterCropAligner
    from ipsb.eval.evaluator import EvaluationModule
    from ipsb.eval.methods import IpsbSwapper
    from ipsb.eval.networks import MetricNetworks
    from ipsb.data.output_plan import check_output_folder
    from ipsb.eval.table import check_writable
    from ipsb.data.toy_ffpp import ToyFFPPDataModule
    from ipsb.swap import FaceSwapper, swap_pairs

    t_start = time.perf_counter()
    budget = FAST if fast else FULL
    out = Path(out)
    grid_path = out / "grid.png"
    if grid_path.exists() and not overwrite:
        raise FileExistsError(f"'{grid_path}' exists; pass --overwrite or another --out")
    check_writable(out, "ffpp_toy", overwrite)
    check_output_folder(out, MIN_FREE_BYTES, "the demo's checkpoints, grid and table")
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    # The toy world is made of many small ops; on small shared VMs one thread is faster than two
    # (toy synthesis at batch 8: 0.12 s with 1 thread vs 0.80 s with 2, measured on the 2-core CI machine).
    torch.set_num_threads(threads)
    log(f"ipsb demo ({'fast' if fast else 'full'}): training the four stages on the toy world (CPU)")
    backbone = FaceBackbone.from_config(BACKBONE_CONFIG)

    _fit("basis", backbone, {"output_path": str(ck / "basis.pt"), "overwrite": True},
         {"num_samples": budget.basis_samples}, None, None, log)
    batch = {"batch_size": budget.batch_size}
    _fit("mapping", backbone, {"basis": str(ck / "basis.pt")}, batch, budget.mapping_steps, ck / "mapping.ckpt", log)
    _fit("detail", backbone, {"mapping_checkpoint": str(ck / "mapping.ckpt")}, batch, budget.detail_steps,
         ck / "detail.ckpt", log)
    _fit("blend", backbone, {"detail_checkpoint": str(ck / "detail.ckpt"), "mapping_checkpoint": str(ck / "mapping.ckpt")},
         batch, budget.blend_steps, ck / "blend.ckpt", log)

    swapper = FaceSwapper.from_checkpoints(str(ck / "mapping.ckpt"), str(ck / "detail.ckpt"), str(ck / "blend.ckpt"),
                                           backbone, aligner=CenterCropAligner(output_size=backbone.generator.resolution),
                                           inversion="optimize", invert_steps=budget.invert_steps,
                                           invert_perceptual=0.0)   # MSE only: LPIPS doubles a step's cost
    # held-out pairs: seeds no stage sampled from (training 0-2, validation 12345)
    w_s = backbone.sample_wplus(budget.pairs, seed=9001, truncation_psi=0.7)
    w_t = backbone.sample_wplus(budget.pairs, seed=9002, truncation_psi=0.7)
    images = swap_pairs(swapper, w_s, w_t)
    cols = ("source", "target", "stage1", "stage2", "final")
    grid = to_uint8_grid([[images[c][i] for c in cols] for i in range(budget.pairs)], tile, padding)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(grid_path)
    log(f"  grid ({budget.pairs} held-out pairs x source | target | stage 1 | stage 2 | final): {grid_path}")

    from lightning.pytorch import Trainer

    nets = MetricNetworks.from_config({
        "identity": {"class_path": "ipsb.backbone.toy.networks.ToyIdentity"},
        "regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"},
        "pose": {"class_path": "ipsb.eval.adapters.RegressorAnglePose",
                 "init_args": {"regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}}}})
    evaluator = EvaluationModule(nets, "ffpp", methods=[IpsbSwapper(swapper=swapper, name="StyleIPSB (ipsb, toy)")],
                                 data_swaps_name="ToyRowSwap (toy FF++ videos)", output_dir=str(out),
                                 table_name="ffpp_toy", overwrite=overwrite,
                                 notes=["ipsb demo: toy world, briefly trained stages; numbers comparable only "
                                        "with each other"])
    data = ToyFFPPDataModule(root=str(out / "ffpp"), num_videos=budget.ffpp_videos, num_frames=budget.ffpp_frames,
                             frames_per_video=budget.ffpp_slots, manifest_path=str(out / "ffpp" / "manifest.json"),
                             batch_size=8)
    t0 = time.perf_counter()
    Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).test(evaluator, datamodule=data, verbose=False)
    md, js = evaluator.table_files()
    log(f"  FF++-style metrics on the toy FF++ tree ({time.perf_counter() - t0:.1f} s): {md} and {js}")
    seconds = time.perf_counter() - t_start
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    log(f"ipsb demo done in {seconds:.0f} s (load average {load:.1f}). Grid: {grid_path}  Table: {md}")
    return {"grid": grid_path, "table_md": md, "table_json": js, "results": evaluator.results,
            "checkpoints": {n: ck / f for n, f in (("basis", "basis.pt"), ("mapping", "mapping.ckpt"),
                                                   ("detail", "detail.ckpt"), ("blend", "blend.ckpt"))},
            "seconds": seconds}


def main(argv: Optional[list[str]] = None) -> int:
    """``ipsb demo [--out DIR] [--overwrite] [--fast]``."""
    p = argparse.ArgumentParser(prog="ipsb demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing grid / table in --out")
    p.add_argument("--fast", action="store_true", help="a few steps per stage (smoke test)")
    p.add_argument("--tile", type=int, default=128, help="grid tile side in pixels (default 128)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for the toy world)")
    args = p.parse_args(argv)
    run_demo(args.out, args.overwrite, args.fast, args.tile, args.threads)   # errors: the ipsb command's boundary
    return 0
