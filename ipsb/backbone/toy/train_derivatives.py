"""Derivative (Sobolev) fine-tuning of the toy regressor and identity encoder:
``python -m ipsb.backbone.toy.train_derivatives``.

The basis (:mod:`ipsb.basis`) reads the networks' local derivatives ``d net(G(w)) / dw``, not only
their values. A CNN fit to values alone keeps sizeable cross-derivatives (its pose output reacts
locally to expression, its identity embedding to pose) that average out over a data set but tilt
the basis. So after :mod:`ipsb.backbone.toy.train`, each network is fine-tuned on its value loss
plus a derivative loss: for a training code with coefficients ``c [30]`` and a seeded tangent
``u ~ N(0, I)`` in standardised coefficient units, the faces at ``c +- eps * std * u`` are rendered
over the code's own background and detail (:meth:`ToyGenerator.raw_features_of`), and the central
difference ``(net(x+) - net(x-)) / (2 eps)`` is asked to equal the true change:

* regressor (standardised output ``[30]``): ``u``;
* identity encoder (features ``[14]`` = standardised id + tex): ``u`` at the id + tex coefficients
  (every other coefficient, pose and expression included, must not move it).

The networks still see only images; the renderer is used only to make training pairs.
Value losses: the regressor's MSE to the standardised coefficients; the identity encoder's
same-identity pair loss at invariance weight 30 (:mod:`ipsb.backbone.toy.train_identity`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ASSETS, ToyIdentity, ToyRegressor
from ipsb.backbone.toy.train import fit, load_or_render_shard, save_half
from ipsb.backbone.toy.train_identity import identity_pair_loss


@torch.no_grad()
def render_tangents(gen: ToyGenerator, wplus: torch.Tensor, coeffs: torch.Tensor, std: torch.Tensor, eps: float,
                    seed: int, chunk: int = 256) -> dict:
    """Tangents ``u [n,30]`` and images ``plus``/``minus [n,3,R,R]`` of the faces at ``c +- eps*std*u``."""
    u = torch.randn(coeffs.shape, generator=torch.Generator().manual_seed(seed)).to(coeffs.device)
    plus, minus = [], []
    for i in range(0, coeffs.shape[0], chunk):
        c, w, dc = coeffs[i:i + chunk], wplus[i:i + chunk], eps * std * u[i:i + chunk]
        plus.append(gen.compose(gen.raw_features_of(c + dc, w)))
        minus.append(gen.compose(gen.raw_features_of(c - dc, w)))
    return {"u": u, "plus": torch.cat(plus), "minus": torch.cat(minus)}


def derivative_loss(outputs, tangents: dict, target_index, eps: float):
    """``outputs(images) -> [b,D]``; MSE of the central difference to ``u[:, target_index]`` (0 elsewhere)."""

    def loss(i: torch.Tensor) -> torch.Tensor:
        diff = (outputs(tangents["plus"][i]) - outputs(tangents["minus"][i])) / (2 * eps)
        return F.mse_loss(diff, tangents["u"][i][:, target_index])

    return loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=["regressor", "identity"], required=True)
    ap.add_argument("--init", type=Path, default=ASSETS, help="folder with the value-trained weights")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--cache-dir", type=Path, required=True, help="the shard cache of ipsb.backbone.toy.train")
    ap.add_argument("--n-shard", type=int, default=32768, help="codes in the cached shard")
    ap.add_argument("--data-seed", type=int, default=3000)
    ap.add_argument("--n-tangent", type=int, default=8192)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--weight", type=float, default=0.5, help="derivative loss weight")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = args.out / f"{args.net}.pt"
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it")
    torch.manual_seed(args.seed)
    t0 = time.time()
    gen = ToyGenerator(seed=0).eval()
    shard = load_or_render_shard(gen, args.cache_dir, args.n_shard, args.data_seed, args.seed + 5 + args.data_seed,
                                 torch.float16)
    tr = shard["train"]
    net = (ToyRegressor if args.net == "regressor" else ToyIdentity)(weights=str(args.init / f"{args.net}.pt"))
    reg = ToyRegressor(weights=str(args.init / "regressor.pt"))      # its buffers define the standardisation
    mean, std = reg.coeff_mean, reg.coeff_std
    n_t = args.n_tangent
    tangents = render_tangents(gen, tr["wplus"][:n_t], tr["coeffs"][:n_t], std, args.eps, args.seed + 21)
    print(f"rendered {n_t} tangent pairs ({time.time() - t0:.0f}s)", flush=True)
    target = (tr["coeffs"] - mean) / std
    if args.net == "regressor":
        value = lambda i: F.mse_loss(net.forward_standardized(tr["image"][i].float()), target[i])
        deriv = derivative_loss(net.forward_standardized, tangents, slice(None), args.eps)
        n_value = tr["image"].shape[0]
    else:
        half = tr["image"].shape[0] // 2
        value = identity_pair_loss(net, tr["image"][:half], shard["partner"]["image"], target[:half][:, net.embed_index],
                                   30.0)
        deriv = derivative_loss(net.features, tangents, net.embed_index, args.eps)
        n_value = half
    gen_t = torch.Generator().manual_seed(args.seed + 31)
    half_batch = max(args.batch // 2, 1)

    def loss(i: torch.Tensor) -> torch.Tensor:
        j = torch.randint(0, n_t, (half_batch,), generator=gen_t)
        return value(i) + args.weight * deriv(j)

    with torch.no_grad():
        probe = torch.arange(min(512, n_t))
        before = float(deriv(probe))
    fit(net, loss, n_value, args.steps, args.batch, args.lr, args.seed + 41, f"{args.net} + derivatives")
    net.eval()
    with torch.no_grad():
        after = float(deriv(probe))
    print(f"derivative error on 512 training tangents: {before:.4f} -> {after:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_half(net, out)
    (args.out / f"train_log_{args.net}_derivatives.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "derivative_error": [before, after],
         "seconds": time.time() - t0}, indent=1))
    print(f"wrote {out} ({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
