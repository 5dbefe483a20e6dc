"""Train the toy world's networks on toy renders: ``python -m ipsb.backbone.toy.train``.

Seeded end to end (data, init, batch order). Renders ``--n-train`` samples (seed 1000) and
``--n-val`` held-out samples (seed 2000) with :func:`ipsb.backbone.toy.data.render_samples`, then
trains with Adam + cosine decay:

* :class:`ToyRegressor` on MSE to the standardised ground-truth coefficients (when its widths equal
  the identity encoder's, the same CNN is also written as the starting :class:`ToyIdentity`;
  :mod:`ipsb.backbone.toy.train_identity` then fine-tunes it for invariance);
* :class:`ToyMasker` on binary cross-entropy to the rendered face coverage.

No augmentation (a shift or flip would change the pose ground truth). Writes float16 state dicts to ``--out``
(default ``ipsb/assets/toy/``) and prints held-out R^2 per coefficient group. Takes a few minutes
of CPU; ``--cache`` keeps the rendered data in a ``.pt`` file between runs.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ipsb.backbone.toy import world
from ipsb.backbone.toy.data import render_samples
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import (ASSETS, IDENTITY_WIDTHS, REGRESSOR_WIDTHS, ToyIdentity, ToyMasker,
                                         ToyRegressor)



def _fit(net, loss_fn, n: int, steps: int, batch: int, lr: float, seed: int, label: str) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss = loss_fn(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"  {label} step {step:5d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)


def mixed_codes(wplus: torch.Tensor) -> torch.Tensor:
    """Bool ``[n]``: codes whose W+ rows are not all equal.

    In a code made by ``mapping`` + broadcast every row is the same w, so the background (row 8) is
    a perfect proxy of identity, expression and pose; a CNN trained on such codes learns to read the
    background instead of the face. Training on codes with independent rows removes that shortcut.
    """
    return (wplus - wplus[:, :1]).abs().amax(dim=(1, 2)) > 0


def r2_per_group(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Variance-weighted R^2 per coefficient group (and the ``pose`` alias): 1 - SSE / SST."""
    out = {}
    groups = dict(world.coeff_slices())
    for alias in ("pose", "identity"):
        names = world.expand_groups(alias)
        groups[alias] = [i for nm in names for i in range(*world.coeff_slices()[nm])]
    for name, sl in groups.items():
        cols = list(range(*sl)) if isinstance(sl, tuple) else sl
        p, t = pred[:, cols], true[:, cols]
        sse = ((p - t) ** 2).sum()
        sst = ((t - t.mean(0)) ** 2).sum()
        out[name] = float(1 - sse / sst)
    return out


def save_half(net, path: Path) -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(state, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--mask-steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--resume", action="store_true", help="start from the weights already in --out")
    ap.add_argument("--train-seeds", type=int, nargs="*", default=None,
                    help="render the training set as mixed-code shards with these seeds (shipped: 3000 4000)")
    ap.add_argument("--all-codes", action="store_true",
                    help="also train on codes whose W+ rows are all equal (default: mixed codes only)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    gen = ToyGenerator(seed=0).eval()
    t0 = time.time()
    if args.cache is not None and args.cache.is_file():
        data = torch.load(args.cache, weights_only=True)
    else:
        if args.train_seeds:   # mixed-only shards of n_train / len(seeds) codes each
            per = args.n_train // len(args.train_seeds)
            shards = [render_samples(gen, per, seed=sd, mixed_only=True) for sd in args.train_seeds]
            train = {k: torch.cat([sh[k] for sh in shards]) for k in shards[0]}
        else:
            train = render_samples(gen, args.n_train, seed=1000)
        data = {"train": train, "val": render_samples(gen, args.n_val, seed=2000)}
        if args.cache is not None:
            torch.save(data, args.cache)
    print(f"data: {args.n_train} train / {args.n_val} val samples ({time.time() - t0:.0f}s)", flush=True)
    tr, va = data["train"], data["val"]
    if not args.all_codes:
        tr = {k: v[mixed_codes(tr["wplus"])] for k, v in tr.items()}
        args.n_train = tr["wplus"].shape[0]
        print(f"training on the {args.n_train} codes with independent W+ rows", flush=True)
    mean, std = tr["coeffs"].mean(0), tr["coeffs"].std(0)
    target = (tr["coeffs"] - mean) / std

    torch.manual_seed(args.seed + 1)
    reg = ToyRegressor(weights=str(args.out / "regressor.pt") if args.resume else None)
    reg.coeff_mean.copy_(mean)
    reg.coeff_std.copy_(std)
    _fit(reg, lambda i: F.mse_loss(reg.forward_standardized(tr["image"][i]), target[i]),
         args.n_train, args.steps, args.batch, args.lr, args.seed + 11, "regressor")
    ident = ToyIdentity(weights=None)
    same_arch = REGRESSOR_WIDTHS == IDENTITY_WIDTHS
    if same_arch:   # otherwise train the identity encoder with ipsb.backbone.toy.train_identity
        ident.net.load_state_dict(reg.net.state_dict())
    torch.manual_seed(args.seed + 3)
    masker = ToyMasker(weights=str(args.out / "masker.pt") if args.resume else None)
    _fit(masker, lambda i: F.binary_cross_entropy_with_logits(masker.logits(tr["image"][i]), tr["mask"][i]),
         args.n_train, args.mask_steps, args.batch, args.lr, args.seed + 13, "masker")

    reg.eval(), ident.eval(), masker.eval()
    with torch.no_grad():
        r2 = r2_per_group(reg(va["image"]), va["coeffs"])
        pm = masker(va["image"]) > 0.5
        tm = va["mask"] > 0.5
        iou = float((pm & tm).sum() / (pm | tm).sum())
    print("held-out R^2:", {k: round(v, 3) for k, v in r2.items()}, f"mask IoU {iou:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_half(reg, args.out / "regressor.pt")
    if same_arch:
        save_half(ident, args.out / "identity.pt")
    save_half(masker, args.out / "masker.pt")
    print(f"wrote {args.out} ({time.time() - t0:.0f}s total)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
