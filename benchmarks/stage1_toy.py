"""Stage-1/2 acceptance in the toy world: basis vs no-basis (free offset) mapping, then stage 2.

    python benchmarks/stage1_toy.py [--steps1 1200] [--steps2 80] [--batch 8] [--attr-weight 10] [--basis PATH|oracle]

Trains, on CPU, (1) MappingModule with the StyleIPSB basis, (2) the same with ``mode="free"`` (the
paper's "no basis" ablation), (3) DetailModule on top of (1), and measures all of them on 64
held-out (w_s, w_t) pairs (``LatentPairDataModule`` validation pairs, seed 12345) against the
no-swap baseline ``G(w_s)``:

* expression / pose error to the target, from the toy regressor (what the stages see) and from the
  toy world's ground truth ``generator.coefficients(w)`` (what is true), pose in degrees;
* toy identity cosine to the source (ToyIdentity), and the ground-truth identity error (L2 of the
  toy identity coefficients id + tex of the swap minus the source's);
* LPIPS (toy backbone's perceptual net) to the target outside the target's face mask.

Acceptance: stage 1 reduces both errors by >= 50 % with identity cosine >= 0.8; stage 2 lowers the
outside-mask LPIPS below stage 1 with identity >= 0.75. The basis is read from ``--basis`` (default
``outputs/toy/basis.pt`` if it exists), else computed here from the toy's regressor and identity
networks with ``ipsb.basis`` (the toy/basis.yaml settings on ``--basis-samples`` samples);
``--basis oracle`` uses the toy's ground-truth subspaces instead.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
TOY_BACKBONE = REPO / "lightning_configs" / "backbone" / "toy.yaml"


def build_backbone(resolution: int = 64):
    """The toy backbone (LPIPS seeded) at ``resolution`` px."""
    from ipsb.backbone.bundle import FaceBackbone

    cfg = yaml.safe_load(TOY_BACKBONE.read_text())
    if resolution != 64:
        args = cfg["init_args"]
        args["generator"].setdefault("init_args", {})["resolution"] = resolution
        args["face_model"].setdefault("init_args", {})["image_size"] = resolution
        args["renderer"].setdefault("init_args", {})["image_size"] = resolution
    torch.manual_seed(0)
    return FaceBackbone.from_config(cfg)


def compute_basis(backbone, samples: int = 16, batch: int = 8):
    """The toy basis as lightning_configs/toy/basis.yaml defines it, from ``samples`` w0."""
    from ipsb.basis.accumulator import GramAccumulator
    from ipsb.basis.layers import layer_mask
    from ipsb.basis.probe import AttributeProbe, coefficient_columns
    from ipsb.basis.solve import solve_basis

    cfg = yaml.safe_load((REPO / "lightning_configs" / "toy" / "basis.yaml").read_text())["model"]["init_args"]
    gen = backbone.generator
    mask = layer_mask(cfg["layers"], gen.num_ws)
    probe = AttributeProbe(gen, backbone.regressor, coefficient_columns(backbone.face_model.coeff_groups,
                                                                        cfg["groups"]), backbone.identity, mask)
    acc = GramAccumulator(probe.groups, int(mask.sum()) * gen.w_dim)
    w0 = backbone.sample_wplus(samples, seed=cfg["seed"], truncation_psi=cfg["truncation_psi"])
    for i in range(0, samples, batch):
        acc.update(probe(w0[i:i + batch]))
    return solve_basis(acc.mean(), cfg["k"], mask, gen.w_dim, delta=cfg["delta"],
                       relative_delta=cfg["relative_delta"], config={"num_samples": samples, "from": "benchmark"})


def oracle_basis(gen):
    """Ground-truth toy basis: orthonormal union of the true expression, pose, lighting subspaces."""
    from ipsb.basis.artifact import Basis

    blocks = [gen.true_subspace(g) for g in ("exp", "pose", "gamma")]
    q, _ = torch.linalg.qr(torch.cat(blocks, 1))
    rows = q.reshape(gen.num_ws, gen.w_dim, -1)
    mask = rows.abs().amax((1, 2)) > 1e-4
    q = (rows * mask[:, None, None]).reshape(q.shape)
    sizes = [b.shape[1] for b in blocks]
    groups = {"exp": (0, sizes[0]), "pose": (sizes[0], sizes[0] + sizes[1]), "light": (sizes[0] + sizes[1], q.shape[1])}
    return Basis(q.float(), groups, {}, {}, mask, gen.num_ws, gen.w_dim, None, {"kind": "oracle"})


def fit(module, steps: int, batch: int, root: Path, seed: int, device: str = "cpu", pairs: Optional[int] = None):
    """Train ``module`` for ``steps`` on LatentPairDataModule pairs; returns the last checkpoint path.

    ``pairs``: training pairs drawn with ``seed`` (default ``steps * batch``: a fresh pair for every
    sample); fewer pairs are cycled through in reshuffled epochs (the small-data regime)."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Progress(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % 50 == 0:
                print(f"  step {trainer.global_step}/{steps} loss {float(outputs['loss']):.4f}", flush=True)

    from ipsb.data.latents import LatentPairDataModule

    dm = LatentPairDataModule(num_train_pairs=pairs or max(steps * batch, batch), num_val_pairs=2, batch_size=batch,
                              truncation_psi=0.7, seed=seed)
    ckpt = ModelCheckpoint(dirpath=str(root), save_last=True, save_top_k=0)
    trainer = Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, max_steps=steps,
                      max_epochs=-1,
                      logger=False, callbacks=[ckpt, Progress()],
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, deterministic=True, default_root_dir=str(root))
    trainer.fit(module, dm)
    # the path Lightning wrote: with an earlier run's last.ckpt in ``root`` it keeps that file and
    # writes last-v1.ckpt, so ``root / "last.ckpt"`` would be the stale checkpoint
    return ckpt.last_model_path


def true_errors(gen, w: torch.Tensor, w_s: torch.Tensor, w_t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ground-truth errors of swapped codes ``w`` ``[B,num_ws,w_dim]`` (toy ``generator.coefficients``):

    * ``id_error_true``: L2 of the identity coefficients (id 8 + tex 6, unit scale) of ``w`` minus
      those of the source ``w_s`` (0: the identity is exactly the source's);
    * ``exp_error_true``: L2 of the expression coefficients of ``w`` minus the target's;
    * ``pose_error_true``: L2 of (yaw, pitch, roll) of ``w`` minus the target's, in degrees.
    """
    slices = gen.face_model.coeff_groups
    true, true_s, true_t = gen.coefficients(w), gen.coefficients(w_s), gen.coefficients(w_t)

    def part(c, names):
        return torch.cat([c[:, slices[n][0]:slices[n][1]] for n in names], 1)

    return {"id_error_true": (part(true, ("id", "tex")) - part(true_s, ("id", "tex"))).norm(dim=1),
            "exp_error_true": (part(true, ("exp",)) - part(true_t, ("exp",))).norm(dim=1),
            "pose_error_true": ((part(true, ("angle",)) - part(true_t, ("angle",))) * 180 / torch.pi).norm(dim=1)}


@torch.no_grad()
def evaluate(backbone, swaps: dict, n_pairs: int = 64, batch: int = 16, per_sample: bool = False,
             lpips: bool = True) -> dict:
    """``swaps``: name -> fn(PairBatch) -> W+ ``[B,num_ws,w_dim]``. Returns name -> metric -> mean
    (``per_sample``: name -> metric -> list of the ``n_pairs`` values, pair order fixed)."""
    from ipsb.data.latents import LatentPairDataModule
    from ipsb.losses.perceptual import perceptual_distance
    from ipsb.nets.face_mask import raw_face_mask
    from ipsb.stages.pair_batch import measure_pairs
    from ipsb.eval.swap_measures import backbone_swap_errors

    gen = backbone.generator
    dm = LatentPairDataModule(num_train_pairs=1, num_val_pairs=n_pairs, val_batch_size=batch, truncation_psi=0.7,
                              generator=gen)
    dm.setup("validate")
    values: dict[str, dict[str, list]] = {k: {} for k in swaps}
    device = gen.w_avg.device
    for b in dm.val_dataloader():
        pairs = measure_pairs(backbone, b["w_s"].to(device), b["w_t"].to(device))
        outside = 1 - raw_face_mask(backbone, pairs.image_t, coeffs=pairs.coeff_t) if lpips else None
        for name, fn in swaps.items():
            w = fn(pairs)
            img = gen.synthesis(w, noise_mode="const")
            m = backbone_swap_errors(backbone, img, pairs.reference)
            m["id_cosine"] = m.pop("id_similarity")
            m.update(true_errors(gen, w, pairs.w_s, pairs.w_t))
            if lpips:
                m["lpips_outside"] = perceptual_distance(backbone.perceptual, img, pairs.image_t, outside)
            for k, v in m.items():
                values[name].setdefault(k, []).extend(v.flatten().tolist())
    if per_sample:
        return values
    return {name: {k: sum(v) / len(v) for k, v in d.items()} for name, d in values.items()}


def table(results: dict[str, dict[str, float]], baseline: str = "no swap (w_s)") -> str:
    base = results[baseline]
    cols = ["exp_error", "pose_error", "exp_error_true", "pose_error_true", "id_cosine", "id_error_true",
            "lpips_outside"]
    head = f"{'method':<24}" + "".join(f"{c:>17}" for c in cols)
    lines = [head, "-" * len(head)]   # (change vs no swap: -50% halves an error)
    for name, r in results.items():
        cells = []
        for c in cols:
            if c.startswith(("exp", "pose")) and name != baseline:
                cells.append(f"{r[c]:8.4f} ({100 * (r[c] / base[c] - 1):+4.0f}%)".rjust(17))
            else:
                cells.append(f"{r[c]:17.4f}")
        lines.append(f"{name:<24}" + "".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps1", type=int, default=1200)
    p.add_argument("--steps2", type=int, default=80)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr1", type=float, default=3e-3)
    p.add_argument("--lr2", type=float, default=2e-2)
    p.add_argument("--attr-weight", type=float, default=10.0, help="e_attr of stages 1 and 2 (toy configs: 10)")
    p.add_argument("--render-weight", type=float, default=0.0,
                   help="L_render weight in training (0: logged only; its backward is the costliest term)")
    p.add_argument("--basis", default=None, help="basis file, or 'oracle' (default: outputs/toy/basis.pt or computed)")
    p.add_argument("--basis-samples", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--out", default="outputs/benchmarks/stage1_toy")
    p.add_argument("--device", default="cpu", help="cpu or cuda (Lightning accelerator gpu)")
    args = p.parse_args(argv)

    from lightning.pytorch import seed_everything

    from ipsb.stages.base import adamw
    from ipsb.stages.detail_module import DetailModule
    from ipsb.stages.mapping_module import MappingModule

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    backbone = build_backbone(args.resolution).to(args.device)
    default = REPO / "outputs" / "toy" / "basis.pt"
    if args.basis == "oracle":
        basis, source = oracle_basis(backbone.generator), "oracle (toy ground truth)"
    elif args.basis or (default.is_file() and args.resolution == 64):
        from ipsb.basis.artifact import Basis
        basis, source = Basis.load(args.basis or default), str(args.basis or default)
    else:
        basis, source = compute_basis(backbone, args.basis_samples), f"computed here ({args.basis_samples} samples)"
    basis_path = basis.save(out / "basis.pt", overwrite=True)
    print(f"basis: {source}: {basis}  [{time.time() - t0:.0f} s]", flush=True)

    common = dict(hidden_dim=128, depth=2, optimizer=adamw(args.lr1), render_weight=args.render_weight, attr_weight=args.attr_weight)
    seed_everything(0)
    stage1 = MappingModule(backbone, basis=str(basis_path), mode="basis", **common)
    ckpt1 = fit(stage1, args.steps1, args.batch, out / "mapping", seed=0, device=args.device)
    print(f"stage 1 (basis) trained [{time.time() - t0:.0f} s]", flush=True)
    seed_everything(0)
    free = MappingModule(backbone, basis=str(basis_path), mode="free", **common)
    fit(free, args.steps1, args.batch, out / "mapping_free", seed=0, device=args.device)
    print(f"stage 1 (no basis) trained [{time.time() - t0:.0f} s]", flush=True)
    seed_everything(0)
    stage2 = DetailModule(backbone, mapping_checkpoint=ckpt1, optimizer=adamw(args.lr2), render_weight=args.render_weight,
                          attr_weight=args.attr_weight)
    fit(stage2, args.steps2, args.batch, out / "detail", seed=1, device=args.device)
    print(f"stage 2 trained [{time.time() - t0:.0f} s]; lambda per layer: "
          f"{[round(float(v), 3) for v in stage2.layer_lambda(1).detach().flatten()]}", flush=True)

    for m in (stage1, free, stage2):
        m.eval()
    results = evaluate(backbone, {
        "no swap (w_s)": lambda pb: pb.w_s,
        "stage 1, basis": lambda pb: stage1.edit(pb.w_s, pb.coeff_s, pb.coeff_t),
        "stage 1, no basis": lambda pb: free.edit(pb.w_s, pb.coeff_s, pb.coeff_t),
        "stage 2 (on basis)": lambda pb: stage2.mix(pb)[1],
    }, n_pairs=args.pairs)
    print(f"\n{args.pairs} held-out toy pairs; {args.steps1} stage-1 / {args.steps2} stage-2 steps of batch "
          f"{args.batch}; basis {source}; {args.resolution} px; {time.time() - t0:.0f} s\n")
    print(table(results))
    s1, s2, base = results["stage 1, basis"], results["stage 2 (on basis)"], results["no swap (w_s)"]
    checks = {
        "stage 1 exp error -50%": s1["exp_error"] <= 0.5 * base["exp_error"],
        "stage 1 pose error -50%": s1["pose_error"] <= 0.5 * base["pose_error"],
        "stage 1 id cosine >= 0.8": s1["id_cosine"] >= 0.8,
        "stage 2 lpips outside < stage 1": s2["lpips_outside"] < s1["lpips_outside"],
        "stage 2 id cosine >= 0.75": s2["id_cosine"] >= 0.75,
    }
    print("\n" + "\n".join(f"  [{'x' if ok else ' '}] {name}" for name, ok in checks.items()))
    torch.save({"results": results, "checks": checks, "args": vars(args)}, out / "results.pt")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
