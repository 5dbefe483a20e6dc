"""``ipsb demo``: the whole method on the embedded default, the toy world, on CPU.

    ipsb demo                          # the shipped trained stages: grid + FF++-style table, seconds
    ipsb demo --train                  # train every stage here first (a few minutes)
    ipsb demo --train --until mapping  # ... stop after stage 1 (basis | mapping | detail | blend)

1. The stages: by default the trained toy stages that ship with ipsb (:func:`ipsb.assets.toy_stage_path`,
   made by ``python -m ipsb.training.toy_stages`` from the stage configs). With ``--train`` they are
   trained here instead, in-process, from the stage configs ``toy/{basis,mapping,detail,blend}.yaml``
   (model and data sections, built like ``ipsb fit`` builds them; step counts shortened, paths moved
   into ``--out/checkpoints``), up to ``--until``.
2. The grid: held-out pairs (W+ codes from seeds no stage trained on) swapped by
   :class:`ipsb.swap.FaceSwapper`, one row per pair, columns titled on the image:
   source | target | stage 1 | stage 2 | final (the stages that exist).
3. The table: the FF++ harness (:class:`ipsb.eval.evaluator.EvaluationModule`, the metric networks of
   ``eval/ffpp_toy.yaml``: toy networks, ``clean`` formulas) on a toy FF++ tree whose videos no stage
   trained on (:mod:`ipsb.data.toy_ffpp`). Toy frames are inverted by the toy encoder (one forward
   pass). Rows: the toy manipulation's own videos, "no swap" (the source as it is), "target" (the
   attribute bound) and ipsb after stage 1, stage 2 and the final stage. Written to
   ``ffpp_toy.md`` / ``ffpp_toy.json`` and printed with each error's change against "no swap".

``--fast`` shrinks the pairs, the toy FF++ tree and (with ``--train``) every step count (tests).
Existing results in ``--out`` are never replaced unless ``--overwrite``. Output layout:
``<out>/grid.png``, ``<out>/ffpp_toy.{md,json}``, ``<out>/ffpp/`` (toy tree), and with ``--train``
``<out>/checkpoints/{basis.pt,mapping.ckpt,detail.ckpt,blend.ckpt}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ipsb.assets import TOY_STAGE_FILES, config_path, toy_stage_path

#: Training order; ``--until`` names one of them.
STAGES = tuple(TOY_STAGE_FILES)
#: Grid columns / table rows per stage output of :func:`ipsb.swap.swap_pairs`.
OUTPUTS = {"mapping": "stage1", "detail": "stage2", "blend": "final"}
TITLES = {"source": "source", "target": "target", "stage1": "stage 1", "stage2": "stage 2", "final": "final"}
#: Seeds no stage samples from (stage configs: 0-2 for training, 12345 for validation; the toy
#: networks' and encoder's data: 3000, 3001, 4321): the grid's pairs and the toy FF++ videos.
GRID_SEEDS = (9001, 9002)
FFPP_SEED = 9000
TABLE = "ffpp_toy"
MANIPULATION_ROW = "toy manipulation (ToyRowSwap videos)"
NO_SWAP_ROW = "no swap (the source as it is)"
TARGET_ROW = "target (attribute bound)"
IPSB_ROWS = {"stage1": "ipsb stage 1", "stage2": "ipsb stage 2", "final": "ipsb final (stage 3)"}
TOY_NOTE = ("Toy world: a seeded 64 px synthetic face generator whose expression, pose and identity are known, "
            "measured by small networks trained on it (ipsb/assets/toy/; the identity network is also the "
            "stages' identity loss), so these rows compare with each other only, not with the paper's FF++ rows "
            "or with numbers on real faces.")


#: free space asked of ``--out`` before training (four toy stage checkpoints, the grid, the table)
MIN_FREE_BYTES = 32 << 20


@dataclass
class Budget:
    """Sizes of one demo run: training (``--train``) and evaluation."""

    basis_samples: int
    mapping_steps: int
    detail_steps: int
    blend_steps: int
    batch_size: int
    pairs: int
    ffpp_videos: int
    ffpp_frames: int
    ffpp_slots: int


FULL = Budget(basis_samples=16, mapping_steps=100, detail_steps=30, blend_steps=30, batch_size=4, pairs=6,
              ffpp_videos=8, ffpp_frames=8, ffpp_slots=4)
FAST = Budget(basis_samples=2, mapping_steps=4, detail_steps=2, blend_steps=2, batch_size=2, pairs=2,
              ffpp_videos=3, ffpp_frames=4, ffpp_slots=2)


def _stage_config(name: str) -> dict:
    import yaml

    return yaml.safe_load(config_path(f"toy/{name}.yaml").read_text())


def _fit(name: str, backbone, model_args: dict, data_args: dict, max_steps: Optional[int], ckpt: Optional[Path],
         log) -> object:
    """Build stage ``name`` from its toy config (+ overrides) as ``ipsb fit`` does, train it, save ``ckpt``."""
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything

    from ipsb.checkpoint_io import AtomicCheckpointIO
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
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      plugins=[AtomicCheckpointIO()], enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, **limits)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(model, datamodule=data)
    if ckpt is not None:
        trainer.save_checkpoint(str(ckpt))
    log(f"  {name}: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU"
        + (f" -> {ckpt}" if ckpt else ""))
    return model


def train_stages(backbone, ck: Path, budget: Budget, until: str, log) -> dict[str, Path]:
    """Train the stages up to ``until`` into ``ck`` (:data:`STAGES` order); returns their files."""
    files = {n: ck / f for n, f in TOY_STAGE_FILES.items()}
    batch = {"batch_size": budget.batch_size}
    plan = [("basis", {"output_path": str(files["basis"]), "overwrite": True}, {"num_samples": budget.basis_samples},
             None),
            ("mapping", {"basis": str(files["basis"])}, batch, budget.mapping_steps),
            ("detail", {"mapping_checkpoint": str(files["mapping"])}, batch, budget.detail_steps),
            ("blend", {"detail_checkpoint": str(files["detail"]), "mapping_checkpoint": str(files["mapping"])},
             batch, budget.blend_steps)]
    done = {}
    for name, model_args, data_args, steps in plan[:STAGES.index(until) + 1]:
        _fit(name, backbone, model_args, data_args, steps, None if name == "basis" else files[name], log)
        done[name] = files[name]
    return done


def build_swapper(backbone, stages: dict[str, Path]):
    """A :class:`FaceSwapper` (toy encoder inversion, centre-crop alignment) from the stage files present.

    Without stage 2 the swap is stage 1 alone (per-layer lambda 1: the stage-1 code unchanged)."""
    from ipsb.data.simple_aligners import CenterCropAligner
    from ipsb.swap import FaceSwapper

    opts = dict(aligner=CenterCropAligner(output_size=backbone.generator.resolution), inversion="encoder")
    if "detail" in stages:
        return FaceSwapper.from_checkpoints(str(stages["mapping"]), str(stages["detail"]),
                                            str(stages["blend"]) if "blend" in stages else None, backbone, **opts)
    from ipsb.nets.layer_lambda import LayerLambda
    from ipsb.stages.detail_module import StageTwoSwap
    from ipsb.stages.mapping_module import load_mapping_stage

    editor = load_mapping_stage(str(stages["mapping"]), backbone, "the stage-1 checkpoint").editor
    return FaceSwapper(backbone, StageTwoSwap(editor, LayerLambda(backbone.generator.num_ws, init=1.0)), None, **opts)


# ---------------------------------------------------------------------------------------------- grid
def to_uint8_grid(rows: list[list[torch.Tensor]], tile: int, padding: int) -> torch.Tensor:
    """``rows`` of ``[3,R,R]`` images in [-1,1] -> uint8 grid ``[3,H,W]`` (``W = cols*tile + (cols+1)*padding``)."""
    from torchvision.utils import make_grid

    cols = len(rows[0])
    tiles = [torch.nn.functional.interpolate(img[None].float().cpu(), size=(tile, tile), mode="nearest")[0]
             for row in rows for img in row]
    grid = make_grid([(t.clamp(-1, 1) + 1) / 2 for t in tiles], nrow=cols, padding=padding, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def title_height(tile: int) -> int:
    """Height in pixels of the title band above a grid of ``tile`` px tiles."""
    return max(12, tile // 6)


def labelled_grid(rows: list[list[torch.Tensor]], titles: list[str], tile: int, padding: int):
    """:func:`to_uint8_grid` with a white band on top holding each column's title, centred over it
    (black text). Returns a PIL RGB image of ``W x (title_height(tile) + H)``."""
    from PIL import Image, ImageDraw, ImageFont

    if len(titles) != len(rows[0]):
        raise ValueError(f"{len(titles)} titles for {len(rows[0])} columns")
    grid = Image.fromarray(to_uint8_grid(rows, tile, padding).permute(1, 2, 0).numpy())
    band = title_height(tile)
    out = Image.new("RGB", (grid.width, band + grid.height), (255, 255, 255))
    out.paste(grid, (0, band))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(8, band - 4))
    for i, text in enumerate(titles):
        centre = padding + i * (tile + padding) + tile / 2
        draw.text((centre, band / 2), text, fill=(0, 0, 0), font=font, anchor="mm")
    return out


# ---------------------------------------------------------------------------------------------- table
def toy_metric_networks():
    """The metric networks of ``eval/ffpp_toy.yaml`` (toy identity and regressor, ``clean`` formulas)."""
    import yaml

    from ipsb.eval.networks import MetricNetworks

    cfg = yaml.safe_load(config_path("eval/ffpp_toy.yaml").read_text())
    return MetricNetworks.from_config(cfg["model"]["init_args"]["networks"])


def summary(rows: list[dict], baseline: str = NO_SWAP_ROW) -> str:
    """Plain-text table of the measured rows: ID top-1 %, ID cosine, expression and pose error, each
    error also as its change against the ``baseline`` row."""
    base = next(r for r in rows if r["method"] == baseline)
    width = max(len(r["method"]) for r in rows)
    lines = [f"{'':<{width}}  {'ID top-1 %':>10}  {'ID cos':>7}  {'Exp L2 (vs no swap)':>20}  "
             f"{'Pose deg (vs no swap)':>21}"]
    for r in rows:
        cells = []
        for key, w in (("exp_l2", 20), ("pose_deg", 21)):
            change = "" if r is base else f" ({100 * (r[key] / base[key] - 1):+.0f}%)"
            cells.append(f"{r[key]:.3f}{change}".rjust(w))
        lines.append(f"{r['method']:<{width}}  {r['id_top1_pct']:>10.1f}  {r['id_cosine']:>7.3f}  "
                     + "  ".join(cells))
    return "\n".join(lines)


def run_table(swapper, outputs: list[str], out: Path, budget: Budget, overwrite: bool, threads: int) -> dict:
    """The FF++-style table (module docstring) -> ``{"md", "json", "rows"}``."""
    from lightning.pytorch import Trainer

    from ipsb.data.toy_ffpp import ToyFFPPDataModule
    from ipsb.eval.evaluator import EvaluationModule
    from ipsb.eval.methods import CopySource, CopyTarget, IpsbSwapper

    methods = [CopySource(name=NO_SWAP_ROW), CopyTarget(name=TARGET_ROW)]
    methods += [IpsbSwapper(swapper=swapper, output=o, name=IPSB_ROWS[o]) for o in outputs]
    evaluator = EvaluationModule(toy_metric_networks(), "ffpp", methods=methods, data_swaps_name=MANIPULATION_ROW,
                                 output_dir=str(out), table_name=TABLE, overwrite=overwrite,
                                 notes=[TOY_NOTE, "Pairs: toy FF++ videos from a seed no stage trained on; "
                                        "frames inverted by the toy encoder."])
    data = ToyFFPPDataModule(root=str(out / "ffpp"), num_videos=budget.ffpp_videos, num_frames=budget.ffpp_frames,
                             seed=FFPP_SEED, frames_per_video=budget.ffpp_slots,
                             manifest_path=str(out / "ffpp" / "manifest.json"), batch_size=16)
    Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).test(evaluator, datamodule=data, verbose=False)
    torch.set_num_threads(threads)   # Lightning's test loop may reset the thread count
    md, js = evaluator.table_files()
    return {"md": md, "json": js, "rows": evaluator.results}


# ---------------------------------------------------------------------------------------------- the demo
def run_demo(out: str | Path = "outputs/demo", overwrite: bool = False, fast: bool = False, train: bool = False,
             until: str = "blend", tile: int = 128, threads: int = 1, padding: int = 4, log=print) -> dict:
    """The demo (module docstring). Returns ``{"grid", "table_md", "table_json", "results", "checkpoints",
    "seconds"}`` (``grid``/``table_*`` None when ``--until basis`` leaves nothing to swap with)."""
    from ipsb.backbone.bundle import FaceBackbone
    from ipsb.data.output_plan import check_no_existing, check_output_folder
    from ipsb.eval.table import table_paths
    from ipsb.swap import swap_pairs

    if until not in STAGES:
        raise ValueError(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
    t_start = time.perf_counter()
    budget = FAST if fast else FULL
    out = Path(out)
    grid_path = out / "grid.png"
    ck = out / "checkpoints"
    planned = [grid_path, *table_paths(out, TABLE)]
    if train:
        planned += [ck / TOY_STAGE_FILES[n] for n in STAGES[:STAGES.index(until) + 1]]
    check_no_existing(planned, overwrite, how="pass --overwrite or another --out")
    check_output_folder(out, MIN_FREE_BYTES, "the demo's checkpoints, grid and table")
    # The toy world is made of many small ops: one thread is faster than two on a small shared CPU.
    torch.set_num_threads(threads)
    backbone = FaceBackbone.from_config(config_path("backbone/toy.yaml"))
    if train:
        ck.mkdir(parents=True, exist_ok=True)
        log(f"ipsb demo: training the stages up to '{until}' on the toy world ({'fast' if fast else 'full'})")
        stages = train_stages(backbone, ck, budget, until, log)
    else:
        stages = {n: toy_stage_path(n) for n in STAGES}
        log(f"ipsb demo: the shipped toy stages ({toy_stage_path('blend').parent})")
    result = {"grid": None, "table_md": None, "table_json": None, "results": [], "checkpoints": stages}
    if "mapping" in stages:
        swapper = build_swapper(backbone, stages)
        outputs = [OUTPUTS[n] for n in STAGES[1:] if n in stages]
        w_s = backbone.sample_wplus(budget.pairs, seed=GRID_SEEDS[0], truncation_psi=0.7)
        w_t = backbone.sample_wplus(budget.pairs, seed=GRID_SEEDS[1], truncation_psi=0.7)
        images = swap_pairs(swapper, w_s, w_t)
        cols = ["source", "target", *outputs]
        out.mkdir(parents=True, exist_ok=True)
        labelled_grid([[images[c][i] for c in cols] for i in range(budget.pairs)], [TITLES[c] for c in cols],
                      tile, padding).save(grid_path)
        log(f"  grid ({budget.pairs} held-out pairs: {' | '.join(TITLES[c] for c in cols)}): {grid_path}")
        t0 = time.perf_counter()
        table = run_table(swapper, outputs, out, budget, overwrite, threads)
        log(f"  FF++-style table on the toy FF++ tree ({time.perf_counter() - t0:.1f} s): {table['md']}\n")
        log(summary(table["rows"]))
        log(f"\n  {TOY_NOTE}")
        result.update(grid=grid_path, table_md=table["md"], table_json=table["json"], results=table["rows"])
    seconds = time.perf_counter() - t_start
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    log(f"ipsb demo done in {seconds:.0f} s (load average {load:.1f}). Grid: {result['grid']}  "
        f"Table: {result['table_md']}")
    result["seconds"] = seconds
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """``ipsb demo [--out DIR] [--overwrite] [--fast] [--train [--until STAGE]] [--tile N] [--threads N]``."""
    p = argparse.ArgumentParser(prog="ipsb demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:2]))
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing grid / table / checkpoints in --out")
    p.add_argument("--fast", action="store_true", help="fewer pairs, a smaller toy FF++ tree, a few steps per stage")
    p.add_argument("--train", action="store_true", help="train the stages here instead of using the shipped ones")
    p.add_argument("--until", choices=STAGES, default=None, help="with --train: the last stage to train")
    p.add_argument("--tile", type=int, default=128, help="grid tile side in pixels (default 128)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for the toy world)")
    args = p.parse_args(argv)
    if args.until is not None and not args.train:
        p.error("--until needs --train (the shipped stages are all trained)")
    # errors: the ipsb command's boundary
    run_demo(args.out, args.overwrite, args.fast, args.train, args.until or "blend", args.tile, args.threads)
    return 0
