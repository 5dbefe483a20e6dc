"""Attribute editing in the toy world: StyleIPSB vs InterfaceGAN, SeFa and GANSpace, against ground truth.

    python benchmarks/editing.py [--codes 48] [--basis PATH] [--out outputs/benchmarks/editing]
        [--plot PATH.png] [--mapping STAGE1.ckpt] [--quick]

For each method and attribute (yaw, pitch, expression = ``smile``, lighting = ``light_x``) one
direction is made (below); each of ``--codes`` held-out W+ codes (seed 4242, psi 0.7; no method
fitted anything on them) is moved along it until the attribute has changed by a fixed amount,
found by per-code bisection on the step, the change **measured by the toy world's ground truth**
(``generator.coefficients``, exact and free of regressor error; the regressor's reading of the same
edit is reported beside it). The amounts are 0.175, 0.35, 0.525 and 0.7 of the attribute's
half-range (yaw 5/10/15/20 degrees, pitch 3.5/7/10.5/14 degrees, smile and light_x 0.175 ... 0.7 and
0.12 ... 0.49), towards the middle of the range (so every code can reach them). Then, averaged over
the codes that reached the amount:

* ``id_gt``: identity drift by the ground truth, L2 change of the 14 identity coefficients
  (id + tex, unit scale; two random toy identities differ by 2.7, median at psi 0.7);
* ``1-cos``: identity drift by the toy identity network, ``1 - cos(E(G(w')), E(G(w)))``;
* ``leak``: leakage by the ground truth: the change of every other attribute coefficient (the rest
  of expression, pose and lighting), each divided by its half-range, as an L2 norm, per unit of the
  target's own change in the same units (0: nothing else moved);
* ``reg/gt``: the regressor-measured attribute change over the requested one.

Methods (all measured on the same codes; the named baseline of the ratios is InterfaceGAN):

* ``StyleIPSB``: the basis computed here with the toy regressor and identity network
  (``lightning_configs/toy/basis.yaml`` settings, ``--basis-samples`` samples), or ``--basis``;
  per attribute, the combination of the responding basis group's directions that moves the
  attribute and holds the other attribute coefficients (:mod:`ipsb.editing.measure`, regressor);
* ``InterfaceGAN``: SVM normal in W from 2000 regressor-labelled samples, applied to all rows (an
  edit of the W code, as InterfaceGAN does), plain and ``cond.`` (the other three attributes'
  normals projected out), and ``cond., rows 3-7`` (on the basis' rows);
* ``SeFa`` and ``GANSpace``: the top 10 components on rows 3-7; per attribute the component with the
  largest regressor-measured effect (signed);
* ``oracle``: the toy world's ground truth, the least-norm direction on rows 3-7 that moves only the
  target's readout (a floor: its ``id_gt`` and ``leak`` are 0 up to round-off, and its ``1-cos`` is
  what the identity network reports for a pure attribute change).

With ``--mapping`` it also measures 3DMM control through that trained stage-1 mapper (what ``ipsb
edit --set`` does): on the same codes, the target coefficients are the code's own (regressor) with
the attribute changed by the table's amount; reported are the true change over the requested one,
the share of codes moved the requested way, identity drift and leakage by the ground truth.

Writes ``results.md``, ``results.json`` and the plot (identity drift against attribute change, one
curve per method, one panel per attribute and drift measure) to ``--out`` (and ``--plot``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stage1_toy  # noqa: E402  (the toy backbone and basis as the stage-1 benchmark builds them)

ATTRIBUTES = ("yaw", "pitch", "smile", "light_x")
FRACTIONS = (0.175, 0.35, 0.525, 0.7)
MAIN = 1                                    # the table's amount: FRACTIONS[MAIN] of the half-range
LAYERS = "3..7"
BASELINE = "InterfaceGAN"
COLOURS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (127, 127, 127), (23, 190, 207))


def oracle_directions(gen, attributes, layers: str = LAYERS):
    """Ground-truth directions: least-norm W+ vectors on ``layers`` whose toy readouts change only the
    attribute's own coefficient pre-activation."""
    from ipsb.basis.layers import layer_mask
    from ipsb.editing.directions import DirectionSet
    from ipsb.editing.style_maps import toy_readout_maps

    maps = toy_readout_maps(gen)
    names = list(maps)
    m = torch.cat([maps[g] for g in names], 0)
    mask = layer_mask(layers, gen.num_ws)
    cols = mask.repeat_interleave(gen.w_dim)
    pinv = torch.linalg.pinv(m[:, cols].double())
    vecs = []
    for attr in attributes:
        e = torch.zeros(m.shape[0], dtype=torch.float64)
        row = sum(maps[g].shape[0] for g in names[:names.index(attr.group)])
        e[row:row + maps[attr.group].shape[0]] = torch.tensor(attr.weights, dtype=torch.float64)
        v = torch.zeros(m.shape[1], dtype=torch.float64)
        v[cols] = pinv @ e
        vecs.append(v.float())
    return DirectionSet("oracle (ground truth)", [a.name for a in attributes], torch.stack(vecs), mask,
                        gen.num_ws, gen.w_dim)


def build_methods(backbone, basis, attributes, codes_dir, log, svm_samples: int = 2000, pca_samples: int = 10000
                  ) -> dict:
    """``{method: DirectionSet named by attribute}``."""
    from ipsb.editing.baselines import ganspace, interfacegan, sefa
    from ipsb.editing.directions import DirectionSet
    from ipsb.editing.measure import attribute_directions

    gen, out = backbone.generator, {}
    t0 = time.time()
    out["StyleIPSB"] = attribute_directions(backbone, DirectionSet.from_basis(basis), attributes, codes_dir,
                                            mode="combine")
    log(f"  StyleIPSB directions: {out['StyleIPSB'].extras['source']} [{time.time() - t0:.0f} s]")
    t0 = time.time()
    ig = interfacegan(backbone, attributes, n_samples=svm_samples, seed=1)
    log(f"  InterfaceGAN SVM accuracy {[round(a, 3) for a in ig.extras['accuracy'].tolist()]} "
        f"[{time.time() - t0:.0f} s]")
    normals = ig.extras["normals"]
    from ipsb.editing.baselines import project_out

    cond = torch.stack([project_out(normals[i], torch.cat([normals[:i], normals[i + 1:]]))
                        for i in range(len(attributes))])
    names = [a.name for a in attributes]
    out["InterfaceGAN"] = ig
    out["InterfaceGAN cond."] = DirectionSet.from_w("InterfaceGAN cond.", names, cond, None, gen.num_ws, gen.w_dim)
    out["InterfaceGAN cond., rows 3-7"] = DirectionSet.from_w("InterfaceGAN cond., rows 3-7", names, cond, LAYERS,
                                                              gen.num_ws, gen.w_dim)
    for name, comps in (("SeFa", sefa(gen, LAYERS, k=10)), ("GANSpace", ganspace(backbone, LAYERS, n_samples=pca_samples, k=10))):
        t0 = time.time()
        out[name] = attribute_directions(backbone, comps, attributes, codes_dir, mode="pick", method=name)
        log(f"  {name}: {out[name].extras['source']} [{time.time() - t0:.0f} s]")
    out["oracle (ground truth)"] = oracle_directions(gen, attributes)
    return out


@torch.no_grad()
def measure_edits(backbone, methods: dict, attributes, codes: torch.Tensor) -> dict:
    """``{method: {attribute: [per-amount dict of means]}}`` (module docstring)."""
    from ipsb.editing.measure import coefficients_of
    from ipsb.editing.search import find_steps

    gen, fm = backbone.generator, backbone.face_model
    groups = fm.coeff_groups
    half = gen.coeff_scale.clone()
    ident = [i for g in ("id", "tex") for i in range(*groups[g])]
    attr_rows = [i for g in ("exp", "angle", "trans", "gamma") for i in range(*groups[g]) if float(half[i]) > 0]
    true0 = gen.coefficients(codes)
    images0 = gen.synthesis(codes)
    emb0 = backbone.identity(images0)
    reg0 = backbone.regressor(images0)
    results: dict = {}
    for method, dirs in methods.items():
        results[method] = {}
        for attr in attributes:
            a0, _ = groups[attr.group]
            target = a0 + list(attr.weights).index(1.0)
            attr_half = float(attr.scale * half[target])
            center = float(attr.read(gen.coeff_center[None], groups)[0])
            value0 = attr.read(true0, groups)
            side = -torch.sign(value0 - center)
            side[side == 0] = 1.0
            others = [i for i in attr_rows if i != target]
            rows = []
            for frac in FRACTIONS:
                amount = frac * attr_half
                search = find_steps(codes, dirs.vector(attr.name), lambda w: attr.read(gen.coefficients(w), groups),
                                    side * amount)
                w1 = codes + search.step[:, None, None] * dirs.vector(attr.name)
                true1 = gen.coefficients(w1)
                images1 = torch.cat([gen.synthesis(c) for c in w1.split(32)])
                emb1 = torch.cat([backbone.identity(x) for x in images1.split(32)])
                reg1 = coefficients_of(backbone, w1)
                ok = search.reached
                d = true1 - true0
                id_gt = d[:, ident].norm(dim=1)
                own = (d[:, target] / half[target]).abs()
                leak = (d[:, others] / half[others]).norm(dim=1) / own.clamp_min(1e-9)
                cos = torch.nn.functional.cosine_similarity(emb1, emb0, dim=1)
                reg_change = (attr.read(reg1, groups) - attr.read(reg0, groups)) * side / amount

                def avg(x):
                    return float(x[ok].mean()) if bool(ok.any()) else float("nan")

                rows.append({"fraction": frac, "amount": amount, "reached": float(ok.float().mean()),
                             "step": avg(search.step.abs()), "id_gt": avg(id_gt), "id_net": avg(1 - cos),
                             "leak": avg(leak), "reg_over_gt": avg(reg_change)})
            results[method][attr.name] = rows
    return results


@torch.no_grad()
def measure_control(backbone, mapping, attributes, codes: torch.Tensor) -> dict:
    """3DMM control through a trained stage-1 mapper: the target coefficients are each code's own
    (regressor) with the attribute changed by the table's amount (towards the middle of its range);
    ``{attribute: {"amount", "true_over_requested", "positive", "id_gt", "leak", "reg_over_requested"}}``
    (ground truth unless named ``reg``)."""
    from ipsb.editing.measure import coefficients_of

    gen, groups = backbone.generator, backbone.face_model.coeff_groups
    half = gen.coeff_scale
    ident = [i for g in ("id", "tex") for i in range(*groups[g])]
    attr_rows = [i for g in ("exp", "angle", "trans", "gamma") for i in range(*groups[g]) if float(half[i]) > 0]
    true0 = gen.coefficients(codes)
    reg0 = coefficients_of(backbone, codes)
    out = {}
    for attr in attributes:
        a0, _ = groups[attr.group]
        target = a0 + list(attr.weights).index(1.0)
        amount = FRACTIONS[MAIN] * float(attr.scale * half[target])
        center = float(attr.read(gen.coeff_center[None], groups)[0])
        side = -torch.sign(attr.read(true0, groups) - center)
        side[side == 0] = 1.0
        coeff_t = reg0 + attr.to_coefficients(side * amount, groups, reg0.shape[1])
        w1 = torch.cat([mapping.edit(w, cs, ct) for w, cs, ct in zip(codes.split(16), reg0.split(16),
                                                                      coeff_t.split(16))])
        true1, reg1 = gen.coefficients(w1), coefficients_of(backbone, w1)
        d = true1 - true0
        change = attr.read(true1, groups) - attr.read(true0, groups)
        others = [i for i in attr_rows if i != target]
        own = (d[:, target] / half[target]).abs()
        out[attr.name] = {
            "amount": amount, "true_over_requested": float((change * side).mean() / amount),
            "positive": float(((change * side) > 0).float().mean()),
            "id_gt": float(d[:, ident].norm(dim=1).mean()),
            "leak": float(((d[:, others] / half[others]).norm(dim=1) / own.clamp_min(1e-9)).median()),
            "reg_over_requested": float(((attr.read(reg1, groups) - attr.read(reg0, groups)) * side).mean() / amount)}
    return out


def control_table(control: dict) -> str:
    lines = ["| attribute (requested change) | true / requested | in the requested direction | id_gt | "
             "leak (median) | regressor / requested |", "|---|---|---|---|---|---|"]
    for name, r in control.items():
        lines.append(f"| {name} ({r['amount']:.3g}) | {r['true_over_requested']:.2f} | {100 * r['positive']:.0f}% | "
                     f"{r['id_gt']:.3f} | {r['leak']:.2f} | {r['reg_over_requested']:.2f} |")
    return "\n".join(lines)


def table(results: dict, attributes) -> str:
    """Markdown table at the main amount, with drift ratios to the named baseline."""
    head = ("| attribute (change) | method | reached | step | id_gt | id_gt / " + BASELINE
            + " | 1-cos | leak | reg/gt |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for attr in attributes:
        base = results[BASELINE][attr.name][MAIN]["id_gt"]
        for method, per in results.items():
            r = per[attr.name][MAIN]
            unit = "°" if attr.unit == "deg" else ""
            lines.append(f"| {attr.name} ({r['amount']:.3g}{unit}) | {method} | {100 * r['reached']:.0f}% | "
                         f"{r['step']:.2f} | {r['id_gt']:.4f} | {r['id_gt'] / base:.3f} | {r['id_net']:.4f} | "
                         f"{r['leak']:.3f} | {r['reg_over_gt']:.2f} |")
    return "\n".join(lines)


def _nice_max(v: float) -> tuple[float, float]:
    """(axis maximum, tick step) for data up to ``v``: steps of 1, 2, 2.5 or 5 times a power of ten."""
    import math

    v = max(v, 1e-9)
    raw = v / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return step * math.ceil(v / step - 1e-9), step


def plot(results: dict, attributes, path: Path) -> Path:
    """Identity drift (ground truth, top row; identity network, bottom row) against the attribute
    change, one panel per attribute, one curve per method. Drawn with PIL (matplotlib is not a
    dependency of ipsb)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    pw, ph, ml, gap, mt, mb = 280, 200, 56, 30, 30, 40
    methods = list(results)
    legend_h = 18 * ((len(methods) + 2) // 3) + 10
    width, height = len(attributes) * (pw + ml + gap) + 10, 2 * (ph + mt + mb) + legend_h
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for row, (key, label) in enumerate((("id_gt", "identity drift, ground truth (L2 of id+tex)"),
                                        ("id_net", "identity drift, network (1 - cos)"))):
        for col, attr in enumerate(attributes):
            x0, y0 = col * (pw + ml + gap) + ml, row * (ph + mt + mb) + mt
            series = {m: [(r["amount"], r[key]) for r in results[m][attr.name] if r[key] == r[key]] for m in methods}
            xs = sorted({x for s in series.values() for x, _ in s}) or [1.0]
            ymax, ystep = _nice_max(max([y for s in series.values() for _, y in s] or [1.0]))
            xmax = xs[-1] * 1.08

            def px(x, y):
                return x0 + x / xmax * pw, y0 + ph - y / ymax * ph

            draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
            n_ticks = int(round(ymax / ystep))
            for i in range(n_ticks + 1):
                _, yy = px(0, i * ystep)
                draw.line([x0 - 4, yy, x0, yy], fill="black")
                draw.text((x0 - ml + 2, yy - 6), f"{i * ystep:.4g}", fill="black", font=font)
            for xv in xs:
                xx, _ = px(xv, 0)
                draw.line([xx, y0 + ph, xx, y0 + ph + 4], fill="black")
                draw.text((xx - 10, y0 + ph + 6), f"{xv:.3g}", fill="black", font=font)
            unit = " (deg)" if attr.unit == "deg" else ""
            draw.text((x0 + pw / 2 - 40, y0 + ph + 22), f"{attr.name} change{unit}", fill="black", font=font)
            draw.text((x0, y0 - 16), label, fill="black", font=font)
            for i, m in enumerate(methods):
                pts = [px(x, y) for x, y in series[m]]
                colour = COLOURS[i % len(COLOURS)]
                if len(pts) > 1:
                    draw.line(pts, fill=colour, width=2)
                for x, y in pts:
                    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    ly = 2 * (ph + mt + mb)
    for i, m in enumerate(methods):
        x, y = (i % 3) * 400 + ml, ly + 18 * (i // 3)
        draw.line([x, y + 6, x + 24, y + 6], fill=COLOURS[i % len(COLOURS)], width=3)
        draw.text((x + 30, y), m, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codes", type=int, default=48, help="held-out codes per attribute and amount")
    p.add_argument("--basis", default=None, help="StyleIPSB basis file (default: computed here)")
    p.add_argument("--basis-samples", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="outputs/benchmarks/editing")
    p.add_argument("--plot", default=None, help="also write the plot here")
    p.add_argument("--mapping", default=None,
                   help="also measure 3DMM control (--set) through this stage-1 checkpoint on the same codes")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6 codes, a 4-sample basis, 300 SVM / 2000 PCA samples (numbers not meaningful)")
    args = p.parse_args(argv)
    svm_samples, pca_samples = 2000, 10000
    if args.quick:
        args.codes, args.basis_samples, svm_samples, pca_samples = 6, 4, 300, 2000
    torch.set_num_threads(args.threads)
    t0 = time.time()
    from ipsb.basis.artifact import Basis
    from ipsb.editing.attributes import get_attribute

    backbone = stage1_toy.build_backbone()
    attributes = [get_attribute(n, backbone.face_model) for n in ATTRIBUTES]
    if args.basis:
        basis, source = Basis.load(args.basis), args.basis
    else:
        basis = stage1_toy.compute_basis(backbone, args.basis_samples)
        source = f"computed here ({args.basis_samples} samples)"
    print(f"basis: {source}: {basis} [{time.time() - t0:.0f} s]", flush=True)
    codes_dir = backbone.sample_wplus(16, seed=77, truncation_psi=0.7)       # measuring directions
    methods = build_methods(backbone, basis, attributes, codes_dir, lambda s: print(s, flush=True),
                            svm_samples, pca_samples)
    print(f"directions ready [{time.time() - t0:.0f} s]", flush=True)
    codes = backbone.sample_wplus(args.codes, seed=4242, truncation_psi=0.7)  # held out
    results = measure_edits(backbone, methods, attributes, codes)
    text = table(results, attributes)
    control = None
    if args.mapping:
        from ipsb.stages.mapping_module import load_mapping_stage

        mapping = load_mapping_stage(args.mapping, backbone).eval()
        control = measure_control(backbone, mapping, attributes, codes)
        text += (f"\n\n3DMM control through the stage-1 mapper {args.mapping} (the same codes, the same amounts):\n\n"
                 + control_table(control))
    seconds = time.time() - t0
    header = (f"Toy-world editing: {args.codes} held-out codes; change found by bisection on the ground truth; "
              f"table at {FRACTIONS[MAIN]} of each attribute's half-range; basis {source}; {seconds:.0f} s")
    print("\n" + header + "\n\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(header + "\n\n" + text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results, "control": control,
                                                  "seconds": seconds}, indent=1))
    for target in [out / "editing_drift.png"] + ([Path(args.plot)] if args.plot else []):
        print(f"plot: {plot(results, attributes, target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
