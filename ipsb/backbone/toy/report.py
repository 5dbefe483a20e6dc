"""``ipsb toy-report``: the toy networks' measured accuracy on held-out toy samples.

Prints the regressor's R^2 per coefficient group (variance-weighted, ``1 - SSE/SST``), the identity
encoder's mean cosine for the same identity under other expression/pose/light/background (W+ rows
0-3 kept, rows 4-9 from another code) and for different identities, the masker's IoU at 0.5, and
the W+ encoder's reconstruction (:func:`encoder_reconstruction`) next to the mean latent's.
Held-out seed 9000 differs from the training (3000, 3001) and validation (2000) seeds.
"""
from __future__ import annotations

import argparse
import time

import torch

from ipsb.backbone.toy import world
from ipsb.backbone.toy.data import IDENTITY_ROWS, render_samples
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ToyEncoder, ToyIdentity, ToyMasker, ToyRegressor

#: Truncation of the codes the encoder is trained and evaluated on (the stages sample at 0.7).
ENCODER_TRUNCATION = 0.7
#: W+ rows the stages edit (expression, pose, lighting: ``world.LAYER_GROUPS``).
EDITED_ROWS = (3, 4, 5, 6, 7)
#: Coefficient groups moved by the edits; their exact W+ directions lie in :data:`EDITED_ROWS`.
EDITED_GROUPS = ("exp", "pose", "gamma")


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


@torch.no_grad()
def identity_cosines(generator, identity, n: int, seed: int) -> tuple[float, float]:
    """(mean cosine same identity, mean cosine different identities) over ``n`` pairs."""
    wa = generator.sample_wplus(n, seed=seed, mix=True)
    wb = generator.sample_wplus(n, seed=seed + 1, mix=True)
    same = torch.cat([wa[:, :IDENTITY_ROWS], wb[:, IDENTITY_ROWS:]], 1)
    ea, eb, es = (identity(generator.synthesis(w)) for w in (wa, wb, same))
    return float((ea * es).sum(-1).mean()), float((ea * eb).sum(-1).mean())


@torch.no_grad()
def reconstruction_errors(generator, wplus: torch.Tensor, image: torch.Tensor, true_wplus: torch.Tensor) -> dict:
    """How well codes ``wplus [n,10,32]`` reconstruct ``image [n,3,R,R]`` (made from ``true_wplus``):

    * ``image_mse``: MSE of ``generator.synthesis(wplus)`` to ``image`` (pixels in [-1,1]);
    * ``wplus_mse``: MSE on the edited rows 3..7, in units of the generator's ``w_std`` squared;
    * ``edit_rel_err``: squared error inside the exact expression / pose / lighting directions
      (``true_subspace``), relative to the spread of the true codes there (the mean latent's error;
      most W+ directions do not show in the image, so only these are recoverable).
    """
    u = lambda w: ((w - generator.w_avg) / generator.w_std).flatten(1)
    err, true = u(wplus) - u(true_wplus), u(true_wplus)
    rows = list(EDITED_ROWS)
    q = generator.true_subspace(EDITED_GROUPS).to(err)                        # [320,k]
    return {"image_mse": float((generator.synthesis(wplus) - image).pow(2).mean()),
            "wplus_mse": float(err.view(-1, generator.num_ws, generator.w_dim)[:, rows].pow(2).mean()),
            "edit_rel_err": float((err @ q).pow(2).sum() / (true @ q).pow(2).sum())}


@torch.no_grad()
def encoder_reconstruction(generator, encoder, n: int, seed: int) -> dict:
    """Encoder inversion of ``n`` held-out toy images (codes with independent rows, truncation 0.7,
    seed ``seed``): :func:`reconstruction_errors` of ``encoder.encode`` (keys ``encoder_*``) and of
    the mean latent (keys ``mean_latent_*``, the reference)."""
    data = render_samples(generator, n, seed=seed, mixed_only=True, truncation_psi=ENCODER_TRUNCATION)
    mean = generator.mean_latent()[:, None].expand(n, generator.num_ws, generator.w_dim)
    out = {}
    for name, w in (("encoder", encoder.encode(data["image"])), ("mean_latent", mean)):
        out.update({f"{name}_{k}": v for k, v in reconstruction_errors(generator, w, data["image"], data["wplus"]).items()})
    return out


@torch.no_grad()
def evaluate(generator=None, regressor=None, identity=None, masker=None, encoder=None, n: int = 256,
             seed: int = 9000) -> dict:
    """Held-out accuracy of the toy networks (defaults: shipped weights). Returns a flat dict:
    ``r2_<group>``, ``id_cos_same``, ``id_cos_diff``, ``mask_iou`` and :func:`encoder_reconstruction`'s
    keys (its codes drawn with seed ``seed + 11``)."""
    generator = generator or ToyGenerator().eval()
    regressor = regressor or ToyRegressor().eval()
    identity = identity or ToyIdentity().eval()
    masker = masker or ToyMasker().eval()
    encoder = encoder or ToyEncoder().eval()
    data = render_samples(generator, n, seed=seed)
    out = {f"r2_{k}": v for k, v in r2_per_group(regressor(data["image"]), data["coeffs"]).items()}
    out["id_cos_same"], out["id_cos_diff"] = identity_cosines(generator, identity, max(n // 4, 8), seed + 7)
    pm, tm = masker(data["image"]) > 0.5, data["mask"] > 0.5
    out["mask_iou"] = float((pm & tm).sum() / (pm | tm).sum())
    out.update(encoder_reconstruction(generator, encoder, n, seed + 11))
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
    print(f"{'metric':<24}{'value':>9}  target")
    targets = {"r2_exp": ">= 0.9", "r2_pose": ">= 0.9", "id_cos_same": ">= 0.9", "id_cos_diff": "<= 0.5"}
    for k in ("image_mse", "wplus_mse", "edit_rel_err"):
        targets[f"encoder_{k}"] = f"< {res.pop(f'mean_latent_{k}'):.4g} (the mean latent's)"
    for k, v in res.items():
        print(f"{k:<24}{v:>9.4g}  {targets.get(k, '')}")
    print("encoder_*: W+ encoder inversion of toy images (codes with independent rows, truncation "
          f"{ENCODER_TRUNCATION:g}); wplus_mse on rows {EDITED_ROWS[0]}..{EDITED_ROWS[-1]} in w_std^2 units; "
          "edit_rel_err inside the expression/pose/lighting directions, relative to the mean latent's")
    print(f"({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
