"""Train the toy identity encoder for invariance: ``python -m ipsb.backbone.toy.train_identity``.

Runs after :mod:`ipsb.backbone.toy.train` (it starts from the trained regressor CNN and reuses
that script's ``--cache`` of renders). It renders (or reads from ``--pair-cache``), for ``--pairs`` training codes, a partner with the
same identity (W+ rows 0-3 kept) and everything else (expression, pose, light, background, detail:
rows 4-9) from another code, then fine-tunes :class:`ToyIdentity` on

    MSE(features, standardised id+tex) over both images  +  ``--invariance`` * MSE(features_a, features_b)

so the embedding stays discriminative (different identities ~orthogonal) while it is locally
insensitive to pose and expression: the basis divides attribute change by identity change, so an
identity network that reacts to pose would tilt the pose directions. Seeded; writes ``identity.pt``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ipsb.backbone.toy import world
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ASSETS, ToyIdentity
from ipsb.checkpoints import load_torch_file
from ipsb.backbone.toy.report import IDENTITY_ROWS
from ipsb.backbone.toy.train import _fit, mixed_codes, save_half


@torch.no_grad()
def render_partners(gen: ToyGenerator, wplus: torch.Tensor, seed: int, chunk: int = 64):
    """Same-identity partners of ``wplus [n,10,32]``: rows 0-3 kept, rows 4-9 from a permuted code.
    Returns (partner wplus, partner images [n,3,64,64])."""
    n = wplus.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    partner = torch.cat([wplus[:, :IDENTITY_ROWS], wplus[perm, IDENTITY_ROWS:]], 1)
    images = [gen.synthesis(partner[i:i + chunk]) for i in range(0, n, chunk)]
    return partner, torch.cat(images)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="the renders cache written by toy.train --cache")
    ap.add_argument("--pairs", type=int, default=4096)
    ap.add_argument("--pair-cache", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--invariance", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, required=True,
                    help="regressor-style weights of the identity architecture to start from (toy.train output "
                         "with REGRESSOR_WIDTHS == IDENTITY_WIDTHS)")
    ap.add_argument("--out", type=Path, default=ASSETS)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.time()
    gen = ToyGenerator(seed=0).eval()
    tr = torch.load(args.cache, weights_only=True)["train"]
    n = min(args.pairs, tr["wplus"].shape[0])
    if args.pair_cache is not None and args.pair_cache.is_file():
        partner_img = torch.load(args.pair_cache, weights_only=True)
    else:
        _, partner_img = render_partners(gen, tr["wplus"][:n], seed=args.seed + 5)
        if args.pair_cache is not None:
            torch.save(partner_img, args.pair_cache)
    print(f"partners: {n} ({time.time() - t0:.0f}s)", flush=True)

    # start from a regressor-style state dict (net.* of IDENTITY_WIDTHS + coeff_mean/coeff_std)
    init = {k: v.float() for k, v in load_torch_file(args.init, "toy identity initialisation").items()}
    ident = ToyIdentity(weights=None)
    ident.net.load_state_dict({k[4:]: v for k, v in init.items() if k.startswith("net.")})
    idx_emb = ident.embed_index
    target = ((tr["coeffs"] - init["coeff_mean"]) / init["coeff_std"])[:, idx_emb]
    images_a = tr["image"]
    keep = torch.nonzero(mixed_codes(tr["wplus"][:n])).squeeze(1)   # no background shortcut (see train.py)
    print(f"training on {keep.numel()} pairs whose first code has independent W+ rows", flush=True)

    def loss_fn(i):
        i = keep[i]
        fa, fb = ident.features(images_a[i]), ident.features(partner_img[i])
        t = target[i]
        return F.mse_loss(fa, t) + F.mse_loss(fb, t) + args.invariance * F.mse_loss(fa, fb)

    _fit(ident, loss_fn, keep.numel(), args.steps, args.batch, args.lr, args.seed + 17, "identity")
    ident.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_half(ident, args.out / "identity.pt")
    print(f"wrote {args.out / 'identity.pt'} ({time.time() - t0:.0f}s total)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
