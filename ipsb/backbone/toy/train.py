"""Train the toy world's networks on toy renders: ``python -m ipsb.backbone.toy.train``.

Seeded end to end (codes, init, batch order); runs on CPU or, with ``--device cuda``, on a GPU
(the shipped weights: see ``ipsb/assets/toy/README.md``). Steps, in order:

1. render ``--n-train`` training codes whose W+ rows are independent (:func:`data.mixed_codes`
   explains why; seed ``--data-seed``), ``--n-val`` held-out samples (seed 2000) and, for the first
   half of the training codes, same-identity partners (:func:`data.same_identity_partners`) and,
   for the first ``--tangent-codes`` codes, exact image tangents along random expression / pose
   directions (:func:`data.attribute_tangents`);
2. :class:`ToyRegressor`: MSE to the standardised ground-truth coefficients;
3. :class:`ToyMasker`: binary cross-entropy to the rendered face coverage;
4. :class:`ToyIdentity`: first trained like the regressor (its own, smaller CNN), then fine-tuned
   for invariance (:mod:`ipsb.backbone.toy.train_identity`) in phases of invariance weight 3, 10, 30
   and, with ``--tangent-steps``, a last phase that also penalises its derivative along the tangents.

``--init DIR`` fine-tunes the weights in ``DIR`` instead of starting from a seeded fresh init.

Adam with cosine decay, no augmentation (a shift or flip would change the pose ground truth).
Writes float16 state dicts to ``--out`` (refusing to overwrite without ``--overwrite``) and prints
the held-out accuracy (:func:`ipsb.backbone.toy.report.evaluate`).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ipsb.backbone.toy import world
from ipsb.backbone.toy.data import attribute_tangents, render_codes, render_samples, same_identity_partners
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ASSETS, ToyIdentity, ToyMasker, ToyRegressor
from ipsb.backbone.toy.train_identity import (finetune_identity, identity_pair_loss, local_invariance_loss,
                                              tangent_penalty)

NETS = {"regressor": ToyRegressor, "masker": ToyMasker, "identity": ToyIdentity}


def _reset(module) -> None:
    """Re-initialise a layer (the seeded init of a net built from saved weights)."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def fit(net, loss_fn, n: int, steps: int, batch: int, lr: float, seed: int, label: str,
        max_seconds: float = 0.0) -> int:
    """Adam steps (cosine lr from ``lr``) of ``loss_fn(batch indices)`` over ``n`` samples; returns
    the steps run. With ``max_seconds`` > 0 the step count is cut, after a 100-step timing, to what
    fits that wall-clock budget (the cosine schedule then runs over the new count; logged)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    t0 = time.time()
    step = 0
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, n, (batch,), generator=gen).to(device)
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 20:
            t20 = time.time()
        if max_seconds > 0 and step == 100:
            per_step = (time.time() - t20) / 80
            fits = int(max_seconds / per_step)
            if fits < steps:
                print(f"  {label}: {per_step * 1e3:.1f} ms/step, cutting {steps} steps to {max(fits, 101)} "
                      f"to fit {max_seconds:.0f}s", flush=True)
                steps = max(fits, 101)
        if step % 1000 == 0 or step == steps - 1:
            print(f"  {label} step {step:6d}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        step += 1
    return steps


def r2_per_group(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Variance-weighted R^2 per coefficient group (and the ``pose`` alias): 1 - SSE / SST."""
    out = {}
    groups = {k: list(range(*v)) for k, v in world.coeff_slices().items()}
    for alias in ("pose", "identity"):
        groups[alias] = [i for nm in world.expand_groups(alias) for i in groups[nm]]
    for name, cols in groups.items():
        p, t = pred[:, cols], true[:, cols]
        sse = ((p - t) ** 2).sum()
        sst = ((t - t.mean(0)) ** 2).sum()
        out[name] = float(1 - sse / sst)
    return out


def save_half(net, path: Path) -> None:
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in net.state_dict().items()}
    torch.save(state, path)


def cached(cache_dir, name: str, device, make) -> dict:
    """``make()`` (a dict of tensors), read from / written to ``cache_dir / name`` when a cache is given."""
    path = Path(cache_dir) / name if cache_dir else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True, map_location=device)
    out = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
    return out


def load_or_render_shard(gen, cache_dir, n: int, seed: int, partner_seed: int, dtype) -> dict:
    """Training shard of ``n`` mixed codes (seed ``seed``) with same-identity partners of its first half:
    ``{"train": render dict, "partner": render dict}``, cached in ``cache_dir`` if given."""
    def render() -> dict:
        t0 = time.time()
        tr = render_samples(gen, n, seed=seed, mixed_only=True, image_dtype=dtype)
        partner = render_codes(gen, same_identity_partners(tr["wplus"][:n // 2], seed=partner_seed), image_dtype=dtype)
        print(f"rendered shard {seed}: {n} codes + {n // 2} partners ({time.time() - t0:.0f}s)", flush=True)
        return {"train": tr, "partner": partner}

    return cached(cache_dir, f"shard_{seed}_{n}_{partner_seed}.pt", gen.w_avg.device, render)


def load_or_render_tangents(gen, cache_dir, wplus, seed: int, per_code: int) -> dict:
    """:func:`data.attribute_tangents` of ``wplus`` (seed ``seed``), cached in ``cache_dir`` if given."""
    def render() -> dict:
        t0 = time.time()
        out = attribute_tangents(gen, wplus, per_code=per_code, seed=seed)
        print(f"rendered {per_code} attribute tangents of {wplus.shape[0]} codes ({time.time() - t0:.0f}s)",
              flush=True)
        return out

    return cached(cache_dir, f"tangents_{seed}_{wplus.shape[0]}_{per_code}.pt", gen.w_avg.device, render)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for regressor.pt, identity.pt, masker.pt")
    ap.add_argument("--overwrite", action="store_true", help="replace weights already in --out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS),
                    help="networks to train (the others are read from --others for the report)")
    ap.add_argument("--init", type=Path, default=None,
                    help="fine-tune: start the networks trained here from the weights in this folder "
                         "instead of a seeded fresh init")
    ap.add_argument("--others", type=Path, default=None,
                    help="folder with the weights of the networks not trained here (default: the shipped ones)")
    ap.add_argument("--n-train", type=int, default=4096, help="training codes in all shards together")
    ap.add_argument("--n-val", type=int, default=512)
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[3000],
                    help="one seed per training shard of n-train / len(data-seeds) codes")
    ap.add_argument("--cache-dir", type=Path, default=None, help="keep rendered shards here between runs")
    ap.add_argument("--render-only", action="store_true", help="render (and cache) the shards, then stop")
    ap.add_argument("--steps", type=int, default=1000, help="regressor steps")
    ap.add_argument("--identity-steps", type=int, default=1000, help="identity pre-training steps")
    ap.add_argument("--invariance-steps", type=int, nargs=3, default=(500, 400, 300),
                    help="steps of the three invariance phases (weights 3, 10, 30)")
    ap.add_argument("--tangent-codes", type=int, default=0,
                    help="training codes (all shards together) that get exact attribute tangents for the "
                         "identity encoder's local-invariance phase")
    ap.add_argument("--tangents-per-code", type=int, default=2)
    ap.add_argument("--tangent-steps", type=int, default=0, help="steps of the local-invariance phase")
    ap.add_argument("--tangent-weight", type=float, default=10.0)
    ap.add_argument("--mask-steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds for all training phases together (0: no limit); each phase gets its share "
                         "by planned steps and is cut to fit (logged)")
    args = ap.parse_args(argv)
    if args.tangent_steps and args.tangent_codes < len(args.data_seeds):
        raise SystemExit(f"--tangent-steps {args.tangent_steps} needs --tangent-codes (at least one per shard)")
    written = [f"{n}.pt" for n in args.nets]
    existing = [f for f in written if (args.out / f).exists()]
    if existing and not args.overwrite and not args.render_only:
        raise SystemExit(f"{args.out} already holds {existing}; pass --overwrite to replace them")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    t0 = time.time()
    gen = ToyGenerator(seed=0).eval().to(device)
    per = args.n_train // len(args.data_seeds)
    shards = [load_or_render_shard(gen, args.cache_dir, per, sd, args.seed + 5 + sd, torch.float16)
              for sd in args.data_seeds]
    per_tangent = args.tangent_codes // len(args.data_seeds)
    tangent_sets = [load_or_render_tangents(gen, args.cache_dir, sh["train"]["wplus"][:per_tangent],
                                            args.seed + 7 + sd, args.tangents_per_code)
                    for sh, sd in zip(shards, args.data_seeds)] if per_tangent and "identity" in args.nets else []
    if args.render_only:
        return 0
    tr = {k: torch.cat([sh["train"][k] for sh in shards]) for k in shards[0]["train"]}
    tangent_coeffs = torch.cat([sh["train"]["coeffs"][:per_tangent] for sh in shards])
    pairs = {k: torch.cat([sh["train"][k][:per // 2] for sh in shards]) for k in ("image", "coeffs")}
    partner_images = torch.cat([sh["partner"]["image"] for sh in shards])
    del shards
    va = render_samples(gen, args.n_val, seed=2000)
    n = tr["image"].shape[0]
    print(f"{n} training codes, {partner_images.shape[0]} same-identity pairs, {args.n_val} validation samples "
          f"on {device} ({time.time() - t0:.0f}s)", flush=True)
    planned = (args.steps * ("regressor" in args.nets) + args.mask_steps * ("masker" in args.nets)
               + (args.identity_steps + 2 * sum(args.invariance_steps) + 5 * args.tangent_steps)
               * ("identity" in args.nets))
    share = lambda steps: args.time_budget * steps / max(planned, 1)   # invariance steps cost two forwards
    mean, std = tr["coeffs"].mean(0), tr["coeffs"].std(0).clamp_min(1e-3)   # a fixed coefficient: target 0
    target = (tr["coeffs"] - mean) / std
    image = lambda i: tr["image"][i].float()
    others = args.others or ASSETS
    start = lambda name: (str(args.init / f"{name}.pt") if args.init else None) if name in args.nets \
        else str(others / f"{name}.pt")
    nets = {name: cls(weights=start(name)).to(device) for name, cls in NETS.items()}
    reset = (lambda module: None) if args.init else _reset
    reg, masker, ident = nets["regressor"], nets["masker"], nets["identity"]

    if "regressor" in args.nets:
        torch.manual_seed(args.seed + 1)
        reg.net.apply(reset)
        reg.coeff_mean.copy_(mean)
        reg.coeff_std.copy_(std)
        fit(reg, lambda i: F.mse_loss(reg.forward_standardized(image(i)), target[i]),
            n, args.steps, args.batch, args.lr, args.seed + 11, "regressor", share(args.steps))
    if "masker" in args.nets:
        torch.manual_seed(args.seed + 3)
        masker.apply(reset)
        fit(masker, lambda i: F.binary_cross_entropy_with_logits(masker.logits(image(i)), tr["mask"][i].float()),
            n, args.mask_steps, args.batch, args.lr, args.seed + 13, "masker", share(args.mask_steps))
    if "identity" in args.nets:
        torch.manual_seed(args.seed + 2)
        ident.net.apply(reset)
        fit(ident, lambda i: F.mse_loss(ident.outputs(image(i)), target[i]),
            n, args.identity_steps, args.batch, args.lr, args.seed + 12, "identity pre-training",
            share(args.identity_steps))
        id_target = ((pairs["coeffs"] - mean) / std)[:, ident.embed_index]
        phases = [(3.0, args.invariance_steps[0], args.lr / 2), (10.0, args.invariance_steps[1], args.lr / 4),
                  (30.0, args.invariance_steps[2], args.lr / 8)]
        finetune_identity(ident, pairs["image"], partner_images, id_target, phases, fit, args.batch, args.seed,
                          lambda steps: share(2 * steps))
        if args.tangent_steps and tangent_sets:
            images = torch.cat([t["image"] for t in tangent_sets])
            tangents = torch.cat([t["tangent"] for t in tangent_sets])
            penalty = tangent_penalty(ident, images, tangents, ((tangent_coeffs - mean) / std)[:, ident.embed_index],
                                      args.tangent_weight)
            loss = local_invariance_loss(identity_pair_loss(ident, pairs["image"], partner_images, id_target, 30.0),
                                             penalty, tangents.shape[0] * tangents.shape[1], max(args.batch // 2, 1),
                                             args.seed + 23)
            fit(ident, loss, pairs["image"].shape[0], args.tangent_steps, args.batch, args.lr / 8, args.seed + 21,
                f"identity (local invariance {args.tangent_weight:g})", share(5 * args.tangent_steps))

    from ipsb.backbone.toy.report import evaluate

    for net in nets.values():
        net.eval()
    with torch.no_grad():
        r2 = r2_per_group(reg(va["image"]), va["coeffs"])
    report = evaluate(gen, reg, ident, masker, n=args.n_val, seed=9000)
    print("held-out R^2 (seed 2000):", {k: round(v, 3) for k, v in r2.items()})
    print("toy-report (seed 9000):", {k: round(v, 3) for k, v in report.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.nets:
        save_half(nets[name], args.out / f"{name}.pt")
    (args.out / f"train_log_{'_'.join(args.nets)}.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "r2_val": r2, "report": report,
         "seconds": time.time() - t0}, indent=1))
    print(f"wrote {written} to {args.out} ({time.time() - t0:.0f}s total)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
