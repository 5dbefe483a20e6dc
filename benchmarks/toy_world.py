"""Toy world speed: ToyGenerator.synthesis at batch 8, 64 px, on CPU (target < 0.2 s).

Prints a table: the batched forward (no grad), the same with autograd, a vmap(jacrev) of the
regressor's expression read-out, and as baselines the same 8 images one at a time (batch 1 x 8)
and the dense renderer (every pixel against every triangle, ``faces_per_tile=10_000``).
Run: ``python benchmarks/toy_world.py [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.func import jacrev, vmap

from ipsb.backbone.toy import SoftRenderer, ToyGenerator
from ipsb.backbone.toy.networks import ToyRegressor


def timed(fn, repeats: int) -> float:
    fn()                                   # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(gen, reg, w, repeats: int) -> list[tuple[str, float]]:
    """The table rows at the current thread count."""
    wg = w.clone().requires_grad_(True)
    dense = SoftRenderer(faces_per_tile=10_000)

    def dense_forward():
        geo = gen.face_model(gen.coefficients(w))
        dense(geo.vertices, gen.face_model.faces, geo.colors)

    rows = []
    with torch.no_grad():
        rows.append(("synthesis B=8 (no grad)", timed(lambda: gen.synthesis(w), repeats)))
        rows.append(("baseline: 8 x synthesis B=1", timed(lambda: [gen.synthesis(w[i:i + 1]) for i in range(8)], repeats)))
        rows.append(("baseline: dense renderer B=8", timed(dense_forward, repeats)))
    rows.append(("synthesis B=8 fwd+bwd", timed(lambda: gen.synthesis(wg).sum().backward(), repeats)))
    f = lambda x: reg(gen.synthesis(x[None]))[0, 9:15]
    rows.append(("vmap(jacrev) exp rows, B=2", timed(lambda: vmap(jacrev(f))(w[:2]), max(1, repeats // 2))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts to compare (small ops can be slower with more threads)")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = ToyGenerator().eval().requires_grad_(False)
    reg = ToyRegressor().eval().requires_grad_(False)
    w = gen.sample_wplus(8, seed=0)
    tables = {}
    for n in args.threads:
        torch.set_num_threads(n)
        tables[n] = measure(gen, reg, w, args.repeats)
    print(f"torch {torch.__version__}; seconds, best of {args.repeats}")
    print(f"{'case':<34}" + "".join(f"{f'{n} thread(s)':>14}" for n in args.threads))
    for i, (name, _) in enumerate(tables[args.threads[0]]):
        print(f"{name:<34}" + "".join(f"{tables[n][i][1]:>14.4f}" for n in args.threads))
    best_n = min(args.threads, key=lambda n: tables[n][0][1])
    rows = tables[best_n]
    print(f"fastest at {best_n} thread(s): speed-up over batch 1 x 8: {rows[1][1] / rows[0][1]:.1f}x; over the dense "
          f"renderer (renderer only vs whole synthesis): {rows[2][1] / rows[0][1]:.1f}x; target synthesis B=8 < 0.2 s: "
          f"{'met' if rows[0][1] < 0.2 else 'NOT met on this (shared) CPU'}")


if __name__ == "__main__":
    main()
