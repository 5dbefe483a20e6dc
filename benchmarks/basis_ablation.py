"""The stage-1 basis ablation against the toy world's ground truth: basis vs no basis, several seeds.

    python benchmarks/basis_ablation.py [--steps 300] [--batch 8] [--small-pairs 32] [--seeds 0 1 2]
        [--arms basis free oracle free_all] [--regimes full small] [--jobs 2] [--pairs 128]
        [--out outputs/benchmarks/basis_ablation] [--no-train]

Stage 1 (:class:`~ipsb.stages.mapping_module.MappingModule`) is trained once per (regime, arm,
seed), each run in its own single-threaded, ``nice`` subprocess (at most ``--jobs`` at a time), and
measured on ``--pairs`` held-out toy pairs (W+ codes of the validation seed 12345, which no run
trains on, so every evaluated identity is new to every run). Arms:

* ``basis``: the method, on the StyleIPSB basis computed here with the toy's trained regressor and
  identity network (``lightning_configs/toy/basis.yaml`` settings, 16 samples);
* ``free``: the paper's "no basis" ablation, a free W+ offset on the same layers (3..7);
* ``oracle``: the basis replaced by the toy's ground-truth expression / pose / lighting subspaces
  (what a perfect basis would be);
* ``free_all``: a free offset on all ten W+ rows (no layer restriction either).

Regimes: ``full`` (a fresh pair for every training sample, ``steps * batch`` pairs) and ``small``
(``--small-pairs`` training pairs cycled for the same number of steps). Results are cached per run
under ``--out/runs/`` (rerunning reuses them). Columns, per held-out pair then averaged:

* ground truth (``generator.coefficients``): ``id_err_gt`` = L2 of the swap's identity coefficients
  (id + tex) minus the source's; ``exp_err_gt`` = L2 of its expression coefficients minus the
  target's; ``pose_err_gt`` = L2 of (yaw, pitch, roll) minus the target's, degrees;
* networks (what training sees): ``id_cos`` = toy identity network cosine to the source,
  ``exp_err``/``pose_err`` from the toy regressor.

The table gives mean +- standard deviation over seeds, next to two references measured in the same
run: "no swap" (``G(w_s)``) and the ground-truth oracle swap (the minimum-norm offset on rows 3..7
that gives exactly the source's identity coefficients with the target's expression, pose and
lighting). It also prints the rank correlation, over held-out pairs, between the identity network's
``1 - cos`` and the ground-truth identity error; what the identity network reports for edits that
change only the true identity or only the attributes; and how well the regressor reads the identity
coefficients that L_geo compares. ``results.md`` / ``results.json`` hold all of it. ``--no-train``
summarises the runs already cached.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stage1_toy  # noqa: E402  (the stage-1 benchmark's backbone, basis, fit and evaluate)

ARMS = ("basis", "free", "oracle", "free_all")
REGIMES = ("full", "small")
COLUMNS = (("id_error_true", "id_err_gt"), ("exp_error_true", "exp_err_gt"), ("pose_error_true", "pose_err_gt"),
           ("id_cosine", "id_cos"), ("exp_error", "exp_err"), ("pose_error", "pose_err"))
ATTRIBUTE_GROUPS = ("exp", "angle", "trans", "gamma")
LAYERS = "3..7"


def oracle_swap(gen, w_s: torch.Tensor, w_t: torch.Tensor, layers: str = LAYERS) -> torch.Tensor:
    """Ground-truth swap ``[B,num_ws,w_dim]``: ``w_s`` plus the minimum-norm offset on ``layers`` whose
    toy readouts keep the source's identity (id, tex) and take the target's expression, pose and
    lighting pre-activations exactly (the toy readouts are linear before their ``tanh``)."""
    from ipsb.basis.layers import layer_mask
    from ipsb.editing.style_maps import toy_readout_maps

    maps = toy_readout_maps(gen)
    mask = layer_mask(layers, gen.num_ws).repeat_interleave(gen.w_dim)
    m = torch.cat([maps[g] for g in maps], 0)                                  # [P, num_ws*w_dim]
    keep = torch.cat([torch.full((maps[g].shape[0],), g in ATTRIBUTE_GROUPS) for g in maps])
    x_s = (w_s - gen.w_avg).flatten(1)
    x_t = (w_t - gen.w_avg).flatten(1)
    delta = (x_t - x_s) @ m.T * keep.to(x_s.dtype)                               # [B,P]: 0 on identity rows
    d = torch.zeros_like(x_s)
    d[:, mask] = delta @ torch.linalg.pinv(m[:, mask]).T
    return w_s + d.reshape(w_s.shape)


@torch.no_grad()
def identity_sensitivity(backbone, n: int = 64, sizes=(0.05, 0.1, 0.3, 1.0)) -> dict[str, float]:
    """What the identity network sees: mean ``1 - cos`` between ``G(w)`` and ``G(w')`` for edits that
    change only the ground-truth identity by a given L2 (``w'`` = ``w`` plus the least-norm offset on
    rows 0..3 that moves the identity readouts along a random direction and no attribute readout,
    scaled by bisection to the size), and for the oracle swap, which changes only attributes."""
    from ipsb.editing.search import find_steps
    from ipsb.editing.style_maps import toy_readout_maps

    gen = backbone.generator
    maps = toy_readout_maps(gen)
    m = torch.cat([maps[g] for g in maps], 0)
    is_id = torch.cat([torch.full((maps[g].shape[0],), g in ("id", "tex")) for g in maps])
    cols = torch.zeros(gen.num_ws, dtype=torch.bool)
    cols[:4] = True
    cols = cols.repeat_interleave(gen.w_dim)
    pinv = torch.linalg.pinv(m[:, cols].double()).float()
    g = torch.Generator().manual_seed(3)
    w = backbone.sample_wplus(n, seed=777, truncation_psi=0.7)
    w_t = backbone.sample_wplus(n, seed=778, truncation_psi=0.7)
    slices = gen.face_model.coeff_groups
    ident = [i for k in ("id", "tex") for i in range(*slices[k])]
    emb0 = backbone.identity(gen.synthesis(w))
    out = {}
    for size in sizes:
        e = torch.zeros(n, m.shape[0])
        e[:, is_id] = torch.nn.functional.normalize(torch.randn(n, int(is_id.sum()), generator=g), dim=1)
        d = torch.zeros(n, gen.num_ws * gen.w_dim)
        d[:, cols] = e @ pinv.T
        steps = []
        for i in range(n):                           # per code: its own direction
            v = d[i].reshape(gen.num_ws, gen.w_dim)
            v = v / v.norm()
            res = find_steps(w[i:i + 1], v, lambda x, i=i: (gen.coefficients(x)[:, ident]
                                                            - gen.coefficients(w[i:i + 1])[:, ident]).norm(dim=1),
                             torch.tensor([size]), t0=0.1)
            steps.append(w[i] + res.step[0] * v)
        emb1 = backbone.identity(gen.synthesis(torch.stack(steps)))
        out[f"identity only, id_err_gt {size}"] = float((1 - (emb0 * emb1).sum(1)).mean())
    w_o = oracle_swap(gen, w, w_t)
    emb_o = backbone.identity(gen.synthesis(w_o))
    out["attributes only (oracle swap), id_err_gt 0"] = float((1 - (emb0 * emb_o).sum(1)).mean())
    return out


@torch.no_grad()
def regressor_identity(backbone, n: int = 64) -> dict[str, float]:
    """How well the regressor reads the identity coefficients that L_geo compares: mean L2 error of
    its id (shape) and tex readouts against the ground truth on faces, and the identity change it
    reports for the oracle swap, whose true identity change is 0."""
    gen = backbone.generator
    sl = gen.face_model.coeff_groups
    w = backbone.sample_wplus(n, seed=777, truncation_psi=0.7)
    w_o = oracle_swap(gen, w, backbone.sample_wplus(n, seed=778, truncation_psi=0.7))
    reg, reg_o = backbone.regressor(gen.synthesis(w)), backbone.regressor(gen.synthesis(w_o))
    true = gen.coefficients(w)
    out = {}
    for g in ("id", "tex"):
        a, b = sl[g]
        out[f"regressor {g} error vs ground truth"] = float((reg[:, a:b] - true[:, a:b]).norm(dim=1).mean())
        out[f"regressor {g} change reported for the oracle swap (true 0)"] = float(
            (reg_o[:, a:b] - reg[:, a:b]).norm(dim=1).mean())
    return out


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# ----------------------------------------------------------------------------- one run (subprocess)
def run_one(regime: str, arm: str, seed: int, args, out: Path) -> dict:
    """Train stage 1 for one (regime, arm, seed) and measure it on the held-out pairs."""
    from lightning.pytorch import seed_everything

    from ipsb.stages.base import adamw
    from ipsb.stages.mapping_module import MappingModule

    torch.set_num_threads(1)
    t0 = time.time()
    backbone = stage1_toy.build_backbone()
    basis = {"basis": out / "basis.pt", "oracle": out / "oracle_basis.pt"}.get(arm, out / "basis.pt")
    mode = "basis" if arm in ("basis", "oracle") else "free"
    layers = "0..9" if arm == "free_all" else None
    seed_everything(seed)
    module = MappingModule(backbone, basis=str(basis), mode=mode, layers=layers, hidden_dim=128, depth=2,
                           optimizer=adamw(args.lr), render_weight=0.0, attr_weight=args.attr_weight)
    pairs = args.small_pairs if regime == "small" else None
    stage1_toy.fit(module, args.steps, args.batch, out / "fits" / f"{regime}_{arm}_s{seed}", seed=seed, pairs=pairs)
    module.eval()
    values = stage1_toy.evaluate(backbone, {arm: lambda pb: module.edit(pb.w_s, pb.coeff_s, pb.coeff_t)},
                                 n_pairs=args.pairs, per_sample=True, lpips=False)[arm]
    return {"regime": regime, "arm": arm, "seed": seed, "steps": args.steps, "batch": args.batch,
            "train_pairs": pairs or args.steps * args.batch, "seconds": time.time() - t0, "values": values}


# ----------------------------------------------------------------------------- driver
def references(args, out: Path) -> dict:
    """No swap and the ground-truth oracle swap on the same held-out pairs (cached)."""
    path = out / "references.json"
    if path.is_file():
        return json.loads(path.read_text())
    backbone = stage1_toy.build_backbone()
    gen = backbone.generator
    refs = stage1_toy.evaluate(backbone, {"no swap (w_s)": lambda pb: pb.w_s,
                                          "oracle swap (ground truth)": lambda pb: oracle_swap(gen, pb.w_s, pb.w_t)},
                               n_pairs=args.pairs, per_sample=True, lpips=False)
    path.write_text(json.dumps(refs))
    return refs


def prepare_bases(out: Path, samples: int) -> None:
    """The computed basis (toy regressor + identity network) and the ground-truth one, once."""
    if (out / "basis.pt").is_file() and (out / "oracle_basis.pt").is_file():
        return
    torch.set_num_threads(1)
    backbone = stage1_toy.build_backbone()
    t0 = time.time()
    basis = stage1_toy.compute_basis(backbone, samples)
    basis.save(out / "basis.pt", overwrite=True)
    stage1_toy.oracle_basis(backbone.generator).save(out / "oracle_basis.pt", overwrite=True)
    print(f"basis: {basis} ({samples} samples, {time.time() - t0:.0f} s)", flush=True)


def launch(jobs: list[tuple[str, str, int]], args, out: Path) -> None:
    """Run the missing jobs as ``nice`` single-threaded subprocesses, at most ``args.jobs`` at a time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < args.jobs:
            regime, arm, seed = pending.pop(0)
            log = open(out / "logs" / f"{regime}_{arm}_s{seed}.log", "w")
            cmd = ["nice", "-n", "10", sys.executable, __file__, "--run", regime, arm, str(seed),
                   "--out", str(out), "--steps", str(args.steps), "--batch", str(args.batch),
                   "--small-pairs", str(args.small_pairs), "--pairs", str(args.pairs), "--lr", str(args.lr),
                   "--attr-weight", str(args.attr_weight)]
            running.append(((regime, arm, seed), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                            log, time.time()))
            print(f"  started {regime}/{arm}/seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            key, proc, log, t0 = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see logs/)"
                print(f"  {'/'.join(map(str, key))}: {status} in {time.time() - t0:.0f} s", flush=True)


def summarise(results: list[dict], refs: dict, args) -> tuple[str, dict]:
    """Markdown table (mean +- std over seeds) and the summary dict."""
    import statistics

    def mean(v):
        return sum(v) / len(v)

    summary: dict = {"references": {}, "arms": {}, "spearman": {}}
    head = "| regime | arm | seeds | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, vals in refs.items():
        cells = {c: mean(vals[k]) for k, c in COLUMNS}
        summary["references"][name] = cells
        lines.append(f"| - | {name} | - | " + " | ".join(f"{cells[c]:.3f}" for _, c in COLUMNS) + " |")
    for regime in args.regimes:
        for arm in args.arms:
            runs = [r for r in results if r["regime"] == regime and r["arm"] == arm]
            if not runs:
                continue
            per_seed = {c: [mean(r["values"][k]) for r in runs] for k, c in COLUMNS}
            stats = {c: (mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for c, v in per_seed.items()}
            summary["arms"][f"{regime}/{arm}"] = {"seeds": [r["seed"] for r in runs], "per_seed": per_seed,
                                                  "mean_std": stats, "train_pairs": runs[0]["train_pairs"],
                                                  "seconds": [r["seconds"] for r in runs]}
            lines.append(f"| {regime} ({runs[0]['train_pairs']} pairs) | {arm} | {len(runs)} | "
                         + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in stats.values()) + " |")
            ids = sum((r["values"]["id_error_true"] for r in runs), [])
            cos = sum(([1 - v for v in r["values"]["id_cosine"]] for r in runs), [])
            summary["spearman"][f"{regime}/{arm}"] = _spearman(ids, cos)
    pooled_id = sum((r["values"]["id_error_true"] for r in results), [])
    pooled_cos = sum(([1 - v for v in r["values"]["id_cosine"]] for r in results), [])
    if results:
        summary["spearman"]["all runs"] = _spearman(pooled_id, pooled_cos)
    per_arm = [mean([mean(r["values"]["id_error_true"]) for r in results if r["regime"] == g and r["arm"] == a])
               for g in args.regimes for a in args.arms
               if any(r["regime"] == g and r["arm"] == a for r in results)]
    per_arm_cos = [mean([mean(r["values"]["id_cosine"]) for r in results if r["regime"] == g and r["arm"] == a])
                   for g in args.regimes for a in args.arms
                   if any(r["regime"] == g and r["arm"] == a for r in results)]
    if len(per_arm) > 2:
        summary["spearman"]["arm means (id_err_gt vs -id_cos)"] = _spearman(per_arm, [-c for c in per_arm_cos])
    text = "\n".join(lines)
    text += "\n\nSpearman rank correlation over held-out pairs, 1 - id_cos vs id_err_gt: " + ", ".join(
        f"{k} {v:+.2f}" for k, v in summary["spearman"].items())
    return text, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300, help="stage-1 training steps per run")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--small-pairs", type=int, default=32, help="training pairs of the small-data regime")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--pairs", type=int, default=128, help="held-out evaluation pairs")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--attr-weight", type=float, default=10.0)
    p.add_argument("--basis-samples", type=int, default=16)
    p.add_argument("--out", default="outputs/benchmarks/basis_ablation")
    p.add_argument("--no-train", action="store_true",
                   help="only summarise the runs already under --out (arms/regimes/seeds without one are left out)")
    p.add_argument("--run", nargs=3, metavar=("REGIME", "ARM", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.run:
        regime, arm, seed = args.run[0], args.run[1], int(args.run[2])
        result = run_one(regime, arm, seed, args, out)
        path = out / "runs" / f"{regime}_{arm}_s{seed}.json"
        path.write_text(json.dumps(result))
        return 0

    t0 = time.time()
    for sub in ("runs", "logs", "fits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    prepare_bases(out, args.basis_samples)
    refs = references(args, out)

    def run_path(regime, arm, seed):
        return out / "runs" / f"{regime}_{arm}_s{seed}.json"

    def matches(path):
        r = json.loads(path.read_text())
        return (r["steps"], r["batch"], len(r["values"]["id_cosine"])) == (args.steps, args.batch, args.pairs) and \
            (r["regime"] == "full" or r["train_pairs"] == args.small_pairs)

    jobs = [(g, a, s) for s in args.seeds for g in args.regimes for a in args.arms
            if not (run_path(g, a, s).is_file() and matches(run_path(g, a, s)))]
    if args.no_train:
        jobs = []
    print(f"{len(jobs)} runs to train ({args.steps} steps of batch {args.batch}; small regime "
          f"{args.small_pairs} pairs), {args.jobs} at a time", flush=True)
    launch(jobs, args, out)
    results = [json.loads(run_path(g, a, s).read_text()) for g in args.regimes for a in args.arms for s in args.seeds
               if run_path(g, a, s).is_file() and matches(run_path(g, a, s))]
    text, summary = summarise(results, refs, args)
    backbone = stage1_toy.build_backbone()
    sens = identity_sensitivity(backbone)
    reg = regressor_identity(backbone)
    summary["identity_network_sensitivity"], summary["regressor_identity"] = sens, reg
    text += "\n\nIdentity network (1 - cos to the unedited face) for edits that change only the identity or only " \
            "the attributes, 64 codes:\n" + "\n".join(f"  {k}: {v:.4f}" for k, v in sens.items())
    text += "\n\nThe regressor's identity readout (what L_geo compares), 64 codes:\n" + "\n".join(
        f"  {k}: {v:.3f}" for k, v in reg.items())
    header = (f"Stage-1 basis ablation, toy world: {args.pairs} held-out pairs, {args.steps} steps of batch "
              f"{args.batch}, seeds {args.seeds}; mean ± std over seeds ({time.time() - t0:.0f} s)")
    print("\n" + header + "\n\n" + text)
    (out / "results.md").write_text(header + "\n\n" + text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), **summary}, indent=1))
    missing = len(args.regimes) * len(args.arms) * len(args.seeds) - len(results)
    return 0 if missing == 0 or args.no_train else 1


if __name__ == "__main__":
    sys.exit(main())
