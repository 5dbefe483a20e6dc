"""Basis benchmarks: the Hessian solver (ours vs the authors' FD-HVP Lanczos) and the identity metric estimates.

**Section ``hessian``** (time to basis and eigen-accuracy): exact Gauss-Newton (ours) vs the authors'
FD-HVP + ARPACK Lanczos. Both methods compute the top-k eigenpairs of the sample-averaged Hessian of
the attribute distance ``D_i(w) = ||p(G(w)) - p(G(w0_i))||^2`` over the same masked W+ layers,
generator, attribute network and samples, in float32, in this run:

* **ours**: per-sample Jacobians ``J_i`` (``torch.func`` vmap over the rows of one vjp, ``--chunk-size``
  rows at a time: on CPU 8 rows beat all 64 at once by about 1.7x), the float64 Gram
  ``H = mean_i 2 J_i^T J_i``, dense ``eigh``;
* **baseline** (re-implementation of the authors' / GAN-Geometry's method): Hessian-vector products by
  central finite differences of the gradient, ``Hv ~ (g(w0 + eps v) - g(w0 - eps v)) / (2 eps)`` with
  ``eps = 1e-3 ||w0||``, averaged over the samples (all samples in one batched pass, which favours the
  baseline), and ``scipy.sparse.linalg.eigsh`` (ARPACK Lanczos) with at most 200 iterations.

Reference: the same Hessian in float64 (exact by construction: tests/basis check ``2 J^T J`` against
``torch.autograd.functional.hessian``). Accuracy = max relative error of the top-k eigenvalues and
the max relative eigen-residual ``||H_ref v - lambda v|| / lambda``. Peak memory: extra resident
memory while the method runs (CPU, sampled) or ``torch.cuda.max_memory_allocated`` (GPU).
Settings: the toy world's pose (angle) and expression (6-d) groups when ``ipsb.backbone.toy`` is
available, and a tiny StyleGAN2-architecture generator with a 3-output pose head and a 64-output
expression head (the real expression width).

**Section ``identity``** (the identity metric ``H_id`` at a fraction of the rows): the whole basis
pipeline (:class:`~ipsb.basis.probe.AttributeProbe`, float64 accumulators, generalized eigensolver,
orthonormal union) with ``identity_rows`` = ``exact`` (the baseline), ``sketch:k``, ``lowrank:q``
(:mod:`ipsb.basis.identity_rows`) and ``subspace:m`` (Rayleigh-Ritz: the generalized problem
restricted to the top ``m`` attribute eigenvectors ``V``, with ``H_id`` there exact from ``m``
forward-mode columns ``J_u V`` per sample and its trace from 8 random columns), on the same samples.
Two worlds, each with the settings of its shipped config:

* ``toy``: the toy world (``lightning_configs/toy/basis.yaml``: layers 3..7, pose = angle + trans,
  exp, light; identity embedding 14-d);
* ``stylegan2``: a tiny StyleGAN2 (32 px, W+ 8 x 128, layers 1..7, so ``N = 896``) with random
  heads of the real widths: pose 3, expression 64, lighting 27, and a 512-d unit identity embedding
  (``lightning_configs/basis.yaml``: k = 3 / 20 / 6, delta 1e-3).

Columns: reverse / forward-mode passes per sample and the reverse-pass reduction against exact;
time of the accumulation and its speedup; ``dist``: the largest subspace distance (spectral norm of
the projector difference = sine of the largest principal angle) of a group's directions from the
exact basis', and that angle; ``energy``: the explained energy of the directions under the exact
problem (``tr((V^T B V)^-1 V^T H_g V) / sum_j lambda_j``, the exact basis' own value on its row)
relative to the exact basis'; ``id/attr``: the identity step per attribute step
``mean_v sqrt(v^T H_id v / v^T H_g v)`` under the exact Grams, relative to the exact basis' (worst
group). ``exact, half the samples``: the exact basis of the first half of the samples, the
statistical spread of the exact basis itself. ``gap``: the smallest ratio ``lambda_k / lambda_k+1``
of the exact problem over the groups; a subspace distance is only as stable as this gap allows.

    python benchmarks/basis.py [--quick] [--section hessian|identity] [--device cuda]
"""
from __future__ import annotations

import argparse
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

from ipsb.backbone.interfaces import freeze
from ipsb.basis.jacobian import wplus_jacobian
from ipsb.basis.layers import layer_mask


# --------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak extra memory (MiB) inside a ``with`` block: CUDA allocator peak, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = device, 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base, self._peak, self._stop = self._rss(), self._rss(), False

            def watch():
                while not self._stop:
                    self._peak = max(self._peak, self._rss())
                    time.sleep(0.002)

            self._thread = threading.Thread(target=watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2 ** 20
        else:
            self._stop = True
            self._thread.join()
            self.peak_mib = max(self._peak, self._rss()) - self._base
            self.peak_mib /= 2 ** 20


# --------------------------------------------------------------------------- problems
class AttributeHead(nn.Module):
    """Small CNN: image ``[B,3,R,R]`` -> ``outputs`` attribute parameters (a stand-in 3DMM head)."""

    def __init__(self, resolution: int, outputs: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(32 * (resolution // 4) ** 2, 128), nn.SiLU(), nn.Linear(128, outputs))

    def forward(self, image):
        return self.net(image)


@dataclass
class Problem:
    """One benchmark row: ``readout(wplus [B,num_ws,w_dim]) -> p [B,P]`` and samples ``w0 [N,num_ws,w_dim]``."""

    name: str
    readout: Callable[[torch.Tensor], torch.Tensor]
    modules: list
    w0: torch.Tensor
    mask: torch.Tensor
    k: int


def stylegan_problems(n: int, device) -> list[Problem]:
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    gen = freeze(StyleGAN2Generator(32, w_dim=64, n_mlp=2, channel_base=1024, channel_max=32)).to(device)
    pose = freeze(AttributeHead(32, 3, seed=1)).to(device)
    exp = freeze(AttributeHead(32, 64, seed=2)).to(device)
    with torch.no_grad():
        z = torch.randn(n, gen.w_dim, generator=torch.Generator().manual_seed(3)).to(device)
        w0 = gen.mapping(z, 0.7, gen.mean_latent(512))[:, None].repeat(1, gen.num_ws, 1)
    mask = layer_mask("2..5", gen.num_ws, device)
    tag = f"stylegan2-32px (W+ {gen.num_ws}x{gen.w_dim}, layers 2..5)"
    return [Problem(f"{tag} pose P=3", lambda w: pose(gen.synthesis(w)), [gen, pose], w0, mask, 3),
            Problem(f"{tag} exp P=64", lambda w: exp(gen.synthesis(w)), [gen, exp], w0, mask, 10)]


def toy_problems(n: int, device) -> list[Problem]:
    """The toy world's generator + trained toy regressor (skipped with a note if its weights are absent)."""
    from ipsb.backbone.toy import ToyGenerator
    from ipsb.backbone.toy.networks import ToyRegressor
    from ipsb.checkpoints import MissingCheckpointError

    try:
        reg = freeze(ToyRegressor()).to(device)
    except MissingCheckpointError as e:
        print(f"note: toy rows skipped ({e})")
        return []
    gen = freeze(ToyGenerator()).to(device)
    w0 = gen.sample_wplus(n, seed=3, truncation_psi=0.7).to(device)
    mask = layer_mask("3..7", gen.num_ws, device)
    out = []
    for group, k in (("angle", 3), ("exp", 3)):
        a, b = gen.face_model.coeff_groups[group]
        out.append(Problem(f"toy 64px (W+ 10x32, layers 3..7) {group} P={b - a}",
                           lambda w, a=a, b=b: reg(gen.synthesis(w))[:, a:b], [gen, reg], w0, mask, k))
    return out


# --------------------------------------------------------------------------- methods
def ours(pr: Problem, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact Gauss-Newton: returns (eigenvalues [k], vectors [n,k], reverse passes)."""
    _, jac = wplus_jacobian(pr.readout, pr.w0, pr.mask, chunk_size=chunk_size)   # [N,P,n]
    j = jac.to(torch.float64).reshape(-1, jac.shape[2])
    h = 2 * (j.T @ j) / pr.w0.shape[0]
    evals, vecs = torch.linalg.eigh(h)
    evals, vecs = evals.flip(0)[:pr.k], vecs.flip(1)[:, :pr.k]
    return evals.cpu().numpy(), vecs.cpu().numpy(), jac.shape[1]


def baseline(pr: Problem, max_iter: int = 200, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, int]:
    """Authors' method: FD-HVP of the gradient (eps = 1e-3 ||w0||) + ARPACK (eigsh)."""
    w0 = pr.w0
    idx = torch.nonzero(pr.mask).flatten()
    n = int(pr.mask.sum()) * w0.shape[2]
    with torch.no_grad():
        p0 = pr.readout(w0)
    eps = 1e-3 * w0.reshape(w0.shape[0], -1).norm(dim=1)                       # [N]
    count = [0]

    def grad_at(dw):  # dw [N,n] -> per-sample gradients [N,n] (batched: one pass for all samples)
        w = w0.clone()
        w[:, idx] = w[:, idx] + dw.reshape(w0.shape[0], len(idx), w0.shape[2])
        w.requires_grad_(True)
        d = ((pr.readout(w) - p0) ** 2).sum()
        (g,) = torch.autograd.grad(d, w)
        return g[:, idx].reshape(w0.shape[0], n)

    def matvec(v):
        count[0] += 1
        vt = torch.as_tensor(np.asarray(v).reshape(-1), dtype=w0.dtype, device=w0.device)
        step = eps[:, None] * vt[None]
        hv = (grad_at(step) - grad_at(-step)) / (2 * eps[:, None])
        return hv.mean(0).to(torch.float64).cpu().numpy()

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    try:
        evals, vecs = eigsh(op, k=pr.k, which="LA", maxiter=max_iter, tol=tol, v0=v0)
    except ArpackNoConvergence as e:
        evals, vecs = e.eigenvalues, e.eigenvectors
    order = np.argsort(evals)[::-1]
    return evals[order], vecs[:, order], count[0]


def reference(pr: Problem) -> np.ndarray:
    """Exact mean Hessian in float64 ``[n,n]``."""
    mods = [m.double() for m in pr.modules]
    _, jac = wplus_jacobian(pr.readout, pr.w0.double(), pr.mask)
    for m in mods:
        m.float()
    j = jac.reshape(-1, jac.shape[2])
    return (2 * (j.T @ j) / pr.w0.shape[0]).cpu().numpy()


def accuracy(h: np.ndarray, evals: np.ndarray, vecs: np.ndarray, k: int) -> tuple[float, float]:
    ref = np.linalg.eigvalsh(h)[::-1][:k]
    if len(evals) < k:
        return float("inf"), float("inf")
    ev_err = float(np.max(np.abs(evals[:k] - ref) / np.abs(ref)))
    v = vecs[:, :k] / np.linalg.norm(vecs[:, :k], axis=0)
    res = float(np.max(np.linalg.norm(h @ v - v * evals[:k], axis=0) / np.abs(evals[:k])))
    return ev_err, res


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with PeakMemory(device) as mem:
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t
    return out, dt, mem.peak_mib


# =========================================================================== identity metric section
@dataclass
class BasisWorld:
    """A basis problem: frozen generator / regressor / identity, samples and the config's settings."""

    name: str
    generator: nn.Module
    regressor: nn.Module
    identity: nn.Module
    columns: dict
    w0: torch.Tensor
    mask: torch.Tensor
    k: dict
    delta: float
    relative_delta: bool = True

    @property
    def dim(self) -> int:
        return int(self.mask.sum()) * self.generator.w_dim


class UnitEmbedding(nn.Module):
    """A CNN identity network: image ``[B,3,R,R]`` -> unit embedding ``[B,dim]`` (no bottleneck
    narrower than ``dim``, so its Jacobian can have full rank, as a real ArcFace's)."""

    def __init__(self, resolution: int, dim: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.SiLU(),
                                 nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
                                 nn.Flatten(), nn.Linear(64 * (resolution // 4) ** 2, dim))

    def forward(self, image):
        e = self.net(image)
        return e / e.norm(dim=1, keepdim=True)


class StackedHeads(nn.Module):
    """Several attribute heads as one coefficient regressor ``[B, sum P_g]``."""

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, image):
        return torch.cat([h(image) for h in self.heads], 1)


def _config_args(name: str) -> dict:
    import yaml
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "lightning_configs" / name
    return yaml.safe_load(path.read_text())["model"]["init_args"]


def toy_world(n: int, device) -> list[BasisWorld]:
    from ipsb.backbone.toy import ToyGenerator
    from ipsb.backbone.toy.networks import ToyIdentity, ToyRegressor
    from ipsb.basis.probe import coefficient_columns
    from ipsb.checkpoints import MissingCheckpointError

    try:
        reg, ident = freeze(ToyRegressor()).to(device), freeze(ToyIdentity()).to(device)
    except MissingCheckpointError as e:
        print(f"note: toy world skipped ({e})")
        return []
    cfg = _config_args("toy/basis.yaml")
    gen = freeze(ToyGenerator()).to(device)
    w0 = gen.sample_wplus(n, seed=1, truncation_psi=cfg["truncation_psi"]).to(device)
    return [BasisWorld("toy", gen, reg, ident, coefficient_columns(gen.face_model.coeff_groups, cfg["groups"]),
                       w0, layer_mask(cfg["layers"], gen.num_ws, device), dict(cfg["k"]), float(cfg["delta"]))]


def stylegan_world(n: int, device) -> list[BasisWorld]:
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    cfg = _config_args("basis.yaml")
    torch.manual_seed(0)
    gen = freeze(StyleGAN2Generator(32, w_dim=128, n_mlp=2, channel_base=1024, channel_max=32)).to(device)
    widths = {"pose": 3, "exp": 64, "light": 27}
    reg = freeze(StackedHeads([AttributeHead(32, p, seed=i + 1) for i, p in enumerate(widths.values())])).to(device)
    ident = freeze(UnitEmbedding(32, 512, seed=5)).to(device)
    columns, start = {}, 0
    for g, p in widths.items():
        columns[g], start = list(range(start, start + p)), start + p
    with torch.no_grad():
        z = torch.randn(n, gen.w_dim, generator=torch.Generator().manual_seed(3)).to(device)
        w0 = gen.mapping(z, cfg["truncation_psi"], gen.mean_latent(512))[:, None].repeat(1, gen.num_ws, 1)
    return [BasisWorld("stylegan2", gen, reg, ident, columns, w0, layer_mask("1..7", gen.num_ws, device),
                       dict(cfg["k"]), float(cfg["delta"]))]


def accumulate(world: BasisWorld, identity_rows: str, batch: int, chunk_size, device,
               halves: bool = False):
    """Run the basis pipeline's accumulation; returns (grams, passes per sample, seconds[, grams of
    the first half of the samples])."""
    from ipsb.basis.accumulator import GramAccumulator
    from ipsb.basis.probe import AttributeProbe

    probe = AttributeProbe(world.generator, world.regressor, world.columns, world.identity, world.mask,
                           chunk_size, identity_rows=identity_rows)
    acc = GramAccumulator(probe.groups, world.dim, device)
    first = GramAccumulator(probe.groups, world.dim, device)
    n = world.w0.shape[0]
    _sync(device)
    t = time.perf_counter()
    for start in range(0, n, batch):
        w = world.w0[start:start + batch]
        jac = probe(w, [(1 << 48) + i for i in range(start, start + w.shape[0])])
        acc.update(jac)
        keep = min(w.shape[0], max(n // 2 - start, 0))
        if halves and keep:
            first.update({g: j[:keep] for g, j in jac.items()})
    _sync(device)
    seconds = time.perf_counter() - t
    out = (acc.mean(), dict(probe.last_passes), seconds)
    return out + ((first.mean(),) if halves else ())


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def group_blocks(world: BasisWorld, grams: dict, h_id_mean_diag: float | None = None) -> dict:
    """The basis directions per group ``{g: [N,k_g]}`` (float64, after the orthonormal union), via
    :func:`~ipsb.basis.solve.solve_basis`."""
    from ipsb.basis.solve import solve_basis

    basis = solve_basis(grams, world.k, world.mask.cpu(), world.generator.w_dim, world.delta, world.relative_delta)
    rows = world.mask.cpu().repeat_interleave(world.generator.w_dim)
    return {g: basis.group_vectors(g).double()[rows] for g in world.k}


def subspace_blocks(world: BasisWorld, exact: dict, m: int, batch: int, chunk_size, device,
                    probes: int = 8) -> tuple[dict, dict, float]:
    """Rayleigh-Ritz on ``V`` = top ``m`` eigenvectors of ``sum_g H_g / tr H_g`` (from the exact
    attribute Grams): ``H_id`` on ``V`` from ``m`` forward-mode columns per sample, its trace from
    ``probes`` random columns (Hutchinson). Returns (blocks, passes per sample, seconds)."""
    from ipsb.basis.eigensolver import generalized_eigh, orthonormal_union
    from ipsb.basis.identity_rows import gaussian
    from ipsb.basis.jacobian import WplusDerivatives, project_unit_jacobian

    attr = sum(exact[g] / torch.diagonal(exact[g]).sum() for g in world.k)
    basis_v = torch.linalg.eigh(attr)[1][:, -m:].to(device)                                 # [N,m]
    h_v = torch.zeros(m, m, dtype=torch.float64, device=device)
    trace, n = 0.0, world.w0.shape[0]

    def embed(w):
        return world.identity(world.generator.synthesis(w))

    _sync(device)
    t = time.perf_counter()
    for start in range(0, n, batch):
        w = world.w0[start:start + batch]
        d = WplusDerivatives(embed, w, world.mask)
        omega = gaussian([(1 << 48) + i for i in range(start, start + w.shape[0])], (probes, d.dim), device,
                         w.dtype)
        tangents = torch.cat([basis_v.T.to(w.dtype).unsqueeze(1).expand(m, w.shape[0], -1),
                              omega.transpose(0, 1)])
        cols = project_unit_jacobian(d.out, d.columns(tangents, chunk_size)).double()          # [B,E,m+p]
        h_v += torch.einsum("bem,ben->mn", cols[:, :, :m], cols[:, :, :m])
        trace += float(cols[:, :, m:].pow(2).sum()) / probes
    _sync(device)
    seconds = time.perf_counter() - t
    h_v, mean_diag = h_v / n, trace / n / world.dim
    metric = h_v + world.delta * mean_diag * torch.eye(m, dtype=torch.float64, device=device)
    blocks = []
    for g, k in world.k.items():
        a = basis_v.T @ exact[g].to(device) @ basis_v
        _, c = generalized_eigh(a, metric)
        blocks.append((basis_v @ c[:, :k]).cpu())
    q, sizes = orthonormal_union(blocks)
    out, start = {}, 0
    for g, size in zip(world.k, sizes):
        out[g], start = q[:, start:start + size], start + size
    return out, {"reverse": 0, "forward": m + probes}, seconds


def basis_quality(world: BasisWorld, exact: dict, blocks: dict, ref: dict) -> dict:
    """dist, angle (deg), energy and id/attr of ``blocks`` against the exact basis ``ref``."""
    from ipsb.basis.eigensolver import generalized_eigh, regularised_metric

    h_id = exact["id"].cpu()
    metric = regularised_metric(h_id, world.delta, world.relative_delta)
    dist, energy, idstep = {}, {}, {}
    for g, v in blocks.items():
        qa, qb = torch.linalg.qr(v)[0], torch.linalg.qr(ref[g])[0]
        dist[g] = float(torch.linalg.matrix_norm(qa @ qa.T - qb @ qb.T, ord=2))
        h_g = exact[g].cpu()
        total = float(generalized_eigh(h_g, metric)[0].clamp_min(0).sum())
        energy[g] = float(torch.linalg.solve(v.T @ metric @ v, v.T @ h_g @ v).trace()) / total
        idstep[g] = float(((v * (h_id @ v)).sum(0) / (v * (h_g @ v)).sum(0)).sqrt().mean())
    return {"dist": dist, "energy": energy, "idstep": idstep}


def identity_section(args, device) -> list[dict]:
    n = args.samples or (4 if args.quick else 16)
    worlds = ((toy_world(n, device) if args.only != "stylegan2" else [])
              + (stylegan_world(n, device) if args.only != "toy" else []))
    sweeps = {"toy": (["sketch:2", "sketch:7", "lowrank:2", "lowrank:4", "lowrank:7"], [16, 32]),
              "stylegan2": (["sketch:32", "sketch:128", "lowrank:32", "lowrank:57", "lowrank:128", "lowrank:256"],
                            [64, 256])}
    if args.quick:
        sweeps = {"toy": (["sketch:3", "lowrank:3"], [16]), "stylegan2": (["sketch:57", "lowrank:57"], [64])}
    header = (f"{'world':<10} {'identity rows':<26} {'reverse':>7} {'fwd':>5} {'x fewer':>7} {'time s':>7} "
              f"{'speedup':>7} {'dist':>8} {'angle':>6} {'energy':>7} {'id/attr':>8}  {'4x+1e-2+5%':<10}")
    print(f"\nidentity metric: {n} samples per world, batch {args.batch}, device {device}, chunk {args.chunk_size}")
    print(header)
    print("-" * len(header))
    rows = []
    for world in worlds:
        chunk = args.chunk_size or None
        accumulate(BasisWorld(**{**world.__dict__, "w0": world.w0[:1]}), "exact", 1, chunk, device)  # warm-up
        exact, p_exact, t_exact, half = accumulate(world, "exact", args.batch, chunk, device, halves=True)
        exact = {g: h.cpu() for g, h in exact.items()}
        ref = group_blocks(world, exact)
        base = basis_quality(world, exact, ref, ref)
        gap = _min_gap(world, exact)
        results = [("exact", p_exact, t_exact, ref)]
        results.append(("exact, half the samples", None, None, group_blocks(world, {g: h.cpu() for g, h in half.items()})))
        for spec in sweeps[world.name][0]:
            grams, passes, secs = accumulate(world, spec, args.batch, chunk, device)
            grams = {g: h.cpu() for g, h in grams.items()}
            results.append((spec, passes, secs, group_blocks(world, {**exact, "id": grams["id"]})))
        for m in sweeps[world.name][1]:
            if m < world.dim:
                blocks, passes, secs = subspace_blocks(world, exact, m, args.batch, chunk, device)
                results.append((f"subspace:{m}", passes, secs, blocks))
        for spec, passes, secs, blocks in results:
            q = basis_quality(world, exact, blocks, ref)
            worst = max(q["dist"].values())
            e_rel = min(q["energy"][g] / base["energy"][g] for g in world.k)
            i_rel = max((q["idstep"][g] / base["idstep"][g] for g in world.k), key=lambda r: abs(r - 1))
            fewer = (p_exact["reverse"] / passes["reverse"] if passes["reverse"] else math.inf) if passes else math.nan
            ok = passes is not None and fewer >= 4 and worst <= 1e-2 and abs(i_rel - 1) <= 0.05
            row = dict(world=world.name, rows=spec, reverse=passes["reverse"] if passes else None,
                       forward=passes["forward"] if passes else None, fewer=fewer, seconds=secs,
                       speedup=t_exact / secs if secs else float("nan"), dist=worst, energy=e_rel,
                       idstep=i_rel, accepted=ok, gap=gap)
            rows.append(row)
            cells = ["", "", "", "", ""] if passes is None else [
                str(passes["reverse"]), str(passes["forward"]), f"{fewer:6.1f}x", f"{secs:7.1f}", f"{row['speedup']:6.1f}x"]
            print(f"{world.name:<10} {spec:<26} {cells[0]:>7} {cells[1]:>5} {cells[2]:>7} {cells[3]:>7} {cells[4]:>7} "
                  f"{worst:8.1e} {math.degrees(math.asin(min(worst, 1.0))):5.1f}d {e_rel:7.3f} {i_rel:8.3f}  "
                  f"{'yes' if ok else 'no':<10}")
        print(f"{world.name:<10} exact: energy " + ", ".join(f"{g} {base['energy'][g]:.3f}" for g in world.k)
              + "; id/attr " + ", ".join(f"{g} {base['idstep'][g]:.3f}" for g in world.k)
              + f"; gap lambda_k/lambda_k+1 >= {gap:.3f}; N = {world.dim}")
    print("x fewer: exact reverse passes / reverse passes. 4x+1e-2+5%: >= 4x fewer reverse passes, dist <= 1e-2 "
          "and id/attr within 5% of exact.")
    return rows


def _min_gap(world: BasisWorld, exact: dict) -> float:
    from ipsb.basis.eigensolver import generalized_eigh, regularised_metric

    metric = regularised_metric(exact["id"], world.delta, world.relative_delta)
    gaps = []
    for g, k in world.k.items():
        ev = generalized_eigh(exact[g], metric)[0]
        gaps.append(float(ev[k - 1] / ev[k]))
    return min(gaps)


def hessian_section(args, device) -> None:
    n = args.samples or (4 if args.quick else 16)
    problems = ((toy_problems(n, device) if args.only != "stylegan2" else [])
                + (stylegan_problems(n, device) if args.only != "toy" else []))
    header = (f"{'problem':<52} {'method':<9} {'time s':>8} {'passes':>7} {'peak MiB':>9} "
              f"{'eig rel err':>11} {'residual':>9} {'speedup':>8}")
    print(f"\nHessian solver: samples per problem: {n}; device: {device}; torch threads: {torch.get_num_threads()}; "
          f"ours: {args.chunk_size or 'all'} Jacobian rows per reverse pass")
    print(header)
    print("-" * len(header))
    for pr in problems:
        h = reference(pr)
        chunk = args.chunk_size or None
        ours(pr, chunk)  # warm-up (vmap tracing, allocator)
        (e1, v1, p1), t1, m1 = timed(lambda: ours(pr, chunk), device)
        (e2, v2, p2), t2, m2 = timed(lambda: baseline(pr), device)
        a1, a2 = accuracy(h, e1, v1, pr.k), accuracy(h, e2, v2, pr.k)
        print(f"{pr.name:<52} {'ours':<9} {t1:8.3f} {p1:7d} {m1:9.1f} {a1[0]:11.2e} {a1[1]:9.2e} {t2 / t1:7.1f}x")
        print(f"{'':<52} {'baseline':<9} {t2:8.3f} {2 * p2:7d} {m2:9.1f} {a2[0]:11.2e} {a2[1]:9.2e} {'':>8}")
    print("passes: ours = Jacobian rows (vmapped reverse passes over all samples at once); baseline = "
          "gradient evaluations (2 per FD-HVP, all samples batched). top-k: pose 3, expression 10 "
          "(toy: 3).")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few samples and sweep points (CI-sized)")
    ap.add_argument("--samples", type=int, default=None, help="number of w0 samples (default 4 quick / 16)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--only", choices=["toy", "stylegan2"], default=None, help="run one world")
    ap.add_argument("--section", choices=["hessian", "identity"], default=None, help="run one section")
    ap.add_argument("--batch", type=int, default=4, help="identity section: samples per batch")
    ap.add_argument("--chunk-size", type=int, default=8,
                    help="Jacobian rows per vmapped reverse pass (0: all rows at once)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.section in (None, "hessian"):
        hessian_section(args, device)
    if args.section in (None, "identity"):
        identity_section(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
