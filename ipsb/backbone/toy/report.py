"""``ipsb toy-report``: the toy networks' measured accuracy on held-out toy samples.

Prints the regressor's R^2 per coefficient group (variance-weighted, ``1 - SSE/SST``), the identity
encoder's mean cosine for the same identity under other expression/pose/light/background (W+ rows
0-3 kept, rows 4-9 from another code) and for different identities, and the masker's IoU at 0.5.
Held-out seed 9000 differs from the training (3000) and validation (2000) seeds.
"""
from __future__ import annotations

import argparse
import time

import torch

from ipsb.backbone.toy.data import IDENTITY_ROWS, render_samples
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ToyIdentity, ToyMasker, ToyRegressor
from ipsb.backbone.toy.train import r2_per_group


@torch.no_grad()
def identity_cosines(generator, identity, n: int, seed: int) -> tuple[float, float]:
    """(mean cosine same identity, mean cosine different identities) over ``n`` pairs."""
    wa = generator.sample_wplus(n, seed=seed, mix=True)
    wb = generator.sample_wplus(n, seed=seed + 1, mix=True)
    same = torch.cat([wa[:, :IDENTITY_ROWS], wb[:, IDENTITY_ROWS:]], 1)
    ea, eb, es = (identity(generator.synthesis(w)) for w in (wa, wb, same))
    return float((ea * es).sum(-1).mean()), float((ea * eb).sum(-1).mean())


@torch.no_grad()
def evaluate(generator=None, regressor=None, identity=None, masker=None, n: int = 256, seed: int = 9000) -> dict:
    """Held-out accuracy of the toy networks (defaults: shipped weights). Returns a flat dict:
    ``r2_<group>``, ``id_cos_same``, ``id_cos_diff``, ``mask_iou``."""
    generator = generator or ToyGenerator().eval()
    regressor = regressor or ToyRegressor().eval()
    identity = identity or ToyIdentity().eval()
    masker = masker or ToyMasker().eval()
    data = render_samples(generator, n, seed=seed)
    out = {f"r2_{k}": v for k, v in r2_per_group(regressor(data["image"]), data["coeffs"]).items()}
    out["id_cos_same"], out["id_cos_diff"] = identity_cosines(generator, identity, max(n // 4, 8), seed + 7)
    pm, tm = masker(data["image"]) > 0.5, data["mask"] > 0.5
    out["mask_iou"] = float((pm & tm).sum() / (pm | tm).sum())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ipsb toy-report", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="held-out samples")
    ap.add_argument("--seed", type=int, default=9000)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    res = evaluate(n=args.n, seed=args.seed)
    print(f"toy networks on {args.n} held-out toy samples (seed {args.seed}):")
    print(f"{'metric':<22}{'value':>8}  target")
    targets = {"r2_exp": ">= 0.9", "r2_pose": ">= 0.9", "id_cos_same": ">= 0.9", "id_cos_diff": "<= 0.5"}
    for k, v in res.items():
        print(f"{k:<22}{v:>8.3f}  {targets.get(k, '')}")
    print(f"({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
