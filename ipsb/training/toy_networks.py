"""Train the toy world's networks on toy renders: ``python -m ipsb.training.toy_networks``.

Seeded end to end (codes, init, batch order); runs on CPU or, with ``--device cuda``, on a GPU
(the shipped weights: see ``ipsb/assets/toy/README.md``). Steps, in order:

1. render ``--n-train`` training codes whose W+ rows are independent (:mod:`ipsb.backbone.toy.data`
   explains why; one shard per ``--data-seeds`` seed), ``--n-val`` held-out samples (seed 2000) and,
   for the first half of the training codes, same-identity partners
   (:func:`~ipsb.training.toy_data.same_identity_partners`) and, for the first ``--tangent-codes``
   codes, exact image tangents along random expression / pose directions
   (:func:`~ipsb.training.toy_data.attribute_tangents`);
2. :class:`ToyRegressor`: MSE to the standardised ground-truth coefficients;
3. :class:`ToyMasker`: binary cross-entropy to the rendered face coverage;
4. :class:`ToyIdentity`: first trained like the regressor (its own, smaller CNN), then fine-tuned
   for invariance (:mod:`ipsb.training.toy_identity`) in phases of invariance weight 3, 10, 30
   and, with ``--tangent-steps``, a last phase that also penalises its derivative along the tangents;
5. :class:`ToyEncoder` (only with ``--nets encoder``: it has training codes of its own, truncated by
   ``--encoder-truncation`` as the stages sample them, same count and seeds): ``--encoder-steps`` of
   W+ regression, then ``--encoder-image-steps`` of image fine-tuning through the toy generator
   (:mod:`ipsb.training.toy_encoder`).

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
from typing import Optional

import torch
import torch.nn.functional as F

from ipsb.backbone.toy.data import render_samples
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ASSETS, ToyEncoder, ToyIdentity, ToyMasker, ToyRegressor
from ipsb.backbone.toy.report import ENCODER_TRUNCATION, evaluate, r2_per_group
from ipsb.training.toy_data import load_or_render_encoder_shard, load_or_render_shard, load_or_render_tangents
from ipsb.training.toy_encoder import image_loss, readout_scales, wplus_regression_loss
from ipsb.training.toy_identity import finetune_identity, identity_pair_loss, local_invariance_loss, tangent_penalty

NETS = {"regressor": ToyRegressor, "masker": ToyMasker, "identity": ToyIdentity, "encoder": ToyEncoder}
#: Networks trained when ``--nets`` is not given (the encoder has its own data and phases: ``--nets encoder``).
DEFAULT_NETS = ("regressor", "masker", "identity")
#: Relative cost of a step of each phase, by planned steps (for ``--time-budget``): an invariance step
#: runs two forwards, a tangent step five, an encoder image step renders and back-propagates its batch.
IMAGE_STEP_COST = 8
#: Training codes the encoder's readout loss takes its scales from.
READOUT_SCALE_CODES = 4096


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


def save_half(net, path: Path) -> None:
    """Write ``net``'s state dict with floating tensors in float16 (how the toy assets ship)."""
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in net.state_dict().items()}
    torch.save(state, path)


def start_weights(args: argparse.Namespace, name: str) -> Optional[str]:
    """Weights network ``name`` starts from: ``--init`` (or a seeded fresh init, None) when it is
    trained, else ``--others``, or the shipped file when ``--others`` is not given or lacks it (logged)."""
    if name in args.nets:
        return str(args.init / f"{name}.pt") if args.init else None
    if args.others is not None and (args.others / f"{name}.pt").is_file():
        return str(args.others / f"{name}.pt")
    if args.others is not None:
        print(f"{args.others} has no {name}.pt: the report uses the shipped {ASSETS / f'{name}.pt'}", flush=True)
    return str(ASSETS / f"{name}.pt")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ipsb.training.toy_networks", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for regressor.pt, identity.pt, masker.pt, encoder.pt")
    ap.add_argument("--overwrite", action="store_true", help="replace weights already in --out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nets", nargs="+", default=list(DEFAULT_NETS), choices=list(NETS),
                    help="networks to train (the others are read from --others for the report); default: "
                         + " ".join(DEFAULT_NETS))
    ap.add_argument("--init", type=Path, default=None,
                    help="fine-tune: start the networks trained here from the weights in this folder "
                         "instead of a seeded fresh init")
    ap.add_argument("--others", type=Path, default=None,
                    help="folder with the weights of the networks not trained here (default, and for those it lacks: the "
                         "shipped ones)")
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
    ap.add_argument("--encoder-truncation", type=float, default=ENCODER_TRUNCATION,
                    help="truncation of the encoder's training codes (the stages sample at 0.7)")
    ap.add_argument("--encoder-steps", type=int, default=1000, help="encoder W+ regression steps (batch --batch)")
    ap.add_argument("--encoder-readout-weight", type=float, default=1.0,
                    help="weight of the generator-readout loss during W+ regression")
    ap.add_argument("--encoder-image-steps", type=int, default=200,
                    help="encoder image fine-tuning steps through the toy generator")
    ap.add_argument("--encoder-image-batch", type=int, default=16)
    ap.add_argument("--encoder-image-lr", type=float, default=1e-3)
    ap.add_argument("--encoder-regression-weight", type=float, default=0.01,
                    help="weight of the W+ regression loss (with its readout term) during image fine-tuning")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds for all training phases together (0: no limit); each phase gets its share "
                         "by planned steps and is cut to fit (logged)")
    args = ap.parse_args(argv)
    if args.tangent_steps and args.tangent_codes < len(args.data_seeds):
        raise SystemExit(f"--tangent-steps {args.tangent_steps} needs --tangent-codes (at least one per shard)")
    if not 0.0 < args.encoder_truncation <= 1.0:
        raise SystemExit(f"--encoder-truncation must lie in (0,1], got {args.encoder_truncation}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
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
    gen = ToyGenerator(seed=0).eval().requires_grad_(False).to(device)
    per = args.n_train // len(args.data_seeds)
    image_nets = set(args.nets) - {"encoder"}
    shards = [load_or_render_shard(gen, args.cache_dir, per, sd, args.seed + 5 + sd, torch.float16)
              for sd in args.data_seeds] if image_nets else []
    per_tangent = args.tangent_codes // len(args.data_seeds)
    tangent_sets = [load_or_render_tangents(gen, args.cache_dir, sh["train"]["wplus"][:per_tangent],
                                            args.seed + 7 + sd, args.tangents_per_code)
                    for sh, sd in zip(shards, args.data_seeds)] if per_tangent and "identity" in args.nets else []
    enc_shards = [load_or_render_encoder_shard(gen, args.cache_dir, per, sd, args.encoder_truncation, torch.float16)
                  for sd in args.data_seeds] if "encoder" in args.nets else []
    if args.render_only:
        return 0
    planned = (args.steps * ("regressor" in args.nets) + args.mask_steps * ("masker" in args.nets)
               + (args.identity_steps + 2 * sum(args.invariance_steps) + 5 * args.tangent_steps)
               * ("identity" in args.nets)
               + (args.encoder_steps + IMAGE_STEP_COST * args.encoder_image_steps) * ("encoder" in args.nets))
    share = lambda steps: args.time_budget * steps / max(planned, 1)
    nets = {name: cls(weights=start_weights(args, name)).to(device) for name, cls in NETS.items()}
    reset = (lambda module: None) if args.init else _reset
    if image_nets:
        train_image_nets(args, nets, shards, tangent_sets, per, reset, share)
    del shards, tangent_sets
    if "encoder" in args.nets:
        train_encoder(args, nets["encoder"], gen, enc_shards, reset, share)
    del enc_shards
    for net in nets.values():
        net.eval()
    va = render_samples(gen, args.n_val, seed=2000)
    with torch.no_grad():
        r2 = r2_per_group(nets["regressor"](va["image"]), va["coeffs"])
    report = evaluate(gen, *(nets[k] for k in ("regressor", "identity", "masker", "encoder")), n=args.n_val, seed=9000)
    print("held-out R^2 (seed 2000):", {k: round(v, 3) for k, v in r2.items()})
    print("toy-report (seed 9000):", {k: round(v, 4) for k, v in report.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.nets:
        save_half(nets[name], args.out / f"{name}.pt")
    (args.out / f"train_log_{'_'.join(args.nets)}.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "r2_val": r2, "report": report,
         "seconds": time.time() - t0}, indent=1))
    print(f"wrote {written} to {args.out} ({time.time() - t0:.0f}s total)")
    return 0


def train_image_nets(args, nets: dict, shards: list, tangent_sets: list, per: int, reset, share) -> None:
    """Steps 2-4 of the module docstring: regressor, masker, identity encoder (those in ``args.nets``)."""
    device = torch.device(args.device)
    tr = {k: torch.cat([sh["train"][k] for sh in shards]) for k in shards[0]["train"]}
    per_tangent = args.tangent_codes // len(args.data_seeds)
    tangent_coeffs = torch.cat([sh["train"]["coeffs"][:per_tangent] for sh in shards])
    pairs = {k: torch.cat([sh["train"][k][:per // 2] for sh in shards]) for k in ("image", "coeffs")}
    partner_images = torch.cat([sh["partner"]["image"] for sh in shards])
    n = tr["image"].shape[0]
    print(f"{n} training codes, {partner_images.shape[0]} same-identity pairs on {device}", flush=True)
    mean, std = tr["coeffs"].mean(0), tr["coeffs"].std(0).clamp_min(1e-3)   # a fixed coefficient: target 0
    target = (tr["coeffs"] - mean) / std
    image = lambda i: tr["image"][i].float()
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


def train_encoder(args, encoder: ToyEncoder, gen: ToyGenerator, shards: list, reset, share) -> None:
    """Step 5 of the module docstring: W+ regression, then image fine-tuning through ``gen``."""
    images = torch.cat([sh["image"] for sh in shards])
    wplus = torch.cat([sh["wplus"] for sh in shards])
    n = images.shape[0]
    print(f"{n} encoder training codes (truncation {args.encoder_truncation:g}) on {args.device}", flush=True)
    torch.manual_seed(args.seed + 4)
    encoder.apply(reset)
    encoder.latent_avg.copy_(gen.w_avg)
    encoder.latent_scale.copy_(gen.w_std)
    scales = readout_scales(gen, wplus[:READOUT_SCALE_CODES])
    fit(encoder, wplus_regression_loss(encoder, gen, images, wplus, args.encoder_readout_weight, scales), n,
        args.encoder_steps, args.batch, args.lr, args.seed + 14, "encoder (W+ regression)", share(args.encoder_steps))
    fit(encoder, image_loss(encoder, gen, images, wplus, args.encoder_regression_weight, args.encoder_readout_weight,
                            scales), n, args.encoder_image_steps,
        args.encoder_image_batch, args.encoder_image_lr, args.seed + 15, "encoder (image)",
        share(IMAGE_STEP_COST * args.encoder_image_steps))


if __name__ == "__main__":
    raise SystemExit(main())
