"""``ipsb edit``: edit a face along the StyleIPSB basis, or control it with 3DMM coefficients.

    ipsb edit --seed 3 --out edits.png                                   # strips along the basis
    ipsb edit --image face.jpg --along yaw,smile --range -20:20 --out edits.png --animation edits.gif
    ipsb edit --wplus codes.pt --index 0 --along pose --out pose.png     # every pose direction
    ipsb edit --seed 3 --set yaw+=20 --set smile=0.5 --out control.png   # 3DMM control (stage-1 mapper)
    ipsb edit --seed 3 --transfer exp,pose --reference seed:7 --out transfer.png

The face is a photograph (aligned with ``--align`` and inverted as ``ipsb swap`` does it), a W+ file
(``[N,num_ws,w_dim]`` tensor or ``{"wplus": ...}``; ``--index`` picks the code) or a generator seed.

Along the basis (``--along``, comma-separated; default: yaw, pitch, expression and lighting as the
face model names them): a basis group (``pose``: one strip per direction), one direction
(``pose:0``) or a named attribute (``yaw``, ``pitch``, ``smile``, ``ambient``, ``light_x``,
``light_y``, ``warmth``, or ``exp[3]``). A direction strip steps in units of one standard deviation of
W per coordinate (``--range`` default -2:2); an attribute strip follows the basis combination the
3DMM regressor measures for that attribute and places each cell where the regressor reads the
requested change (``--range`` in the attribute's units, degrees for angles; default +-1.5 standard
deviations of the attribute over sampled faces; ``*`` marks a change out of reach).

3DMM control through the stage-1 mapper (``--mapping``): ``--set NAME=VALUE`` (absolute, display
units), ``NAME+=VALUE`` / ``NAME-=VALUE`` (relative), one strip each (and one for all together);
``--transfer GROUPS --reference FACE`` takes expression (``exp``), pose (``pose`` = angle + trans) or
lighting (``gamma``) from another face (a photo, a ``.pt`` W+ file, or ``seed:N``). The mapper maps
(own coefficients, edited coefficients) to basis coordinates; cells interpolate the edit from 0 to 1.

Outputs: a labelled PNG grid (``--out``) and optionally ``--animation`` (``.gif`` or ``.mp4``).
Existing outputs are kept unless ``--overwrite``. Defaults read the toy world (``--backbone``) and
the trained toy stages that ship with ipsb (``--basis``, ``--mapping``): see :data:`DEFAULTS`. Exit 0;
a bad input or value ends in one line on stderr and exit code 2 (the ``ipsb`` command's error
boundary, :mod:`ipsb.error_boundary`).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from ipsb.assets import config_path, toy_stage_path

#: Default inputs of ``ipsb edit``: the toy backbone and the shipped toy stages (one place to repoint).
DEFAULTS = {
    "backbone": str(config_path("backbone/toy.yaml")),
    "basis": str(toy_stage_path("basis")),
    "mapping": str(toy_stage_path("mapping")),
}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
RANGE_RE = re.compile(r"^-[0-9.]+(e[-+]?\d+)?:")
SET_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\[\]]*)\s*(\+=|-=|=)\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*$")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ipsb edit", description=__doc__.rsplit("\n\n", 1)[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="photograph of a face (aligned and inverted first)")
    src.add_argument("--wplus", help=".pt file of W+ codes [N,num_ws,w_dim]")
    src.add_argument("--seed", type=int, help="sample the face from the generator with this seed")
    p.add_argument("--index", type=int, default=0, help="which code of --wplus (default 0)")
    p.add_argument("--out", required=True, help="output PNG grid")
    p.add_argument("--animation", default=None, help="also write a .gif or .mp4 of the strips")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--along", default=None, help="basis groups, directions or attributes, comma-separated")
    p.add_argument("--range", default=None, help="LO:HI of the strips (units above; -20:20 works unquoted)")
    p.add_argument("--steps", type=int, default=7, help="cells per strip (default 7)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="3DMM control: NAME=VALUE, NAME+=VALUE or NAME-=VALUE (repeatable)")
    p.add_argument("--transfer", default=None, help="3DMM control: groups to take from --reference (exp,pose,gamma)")
    p.add_argument("--reference", default=None, help="photo, .pt W+ file or seed:N for --transfer")
    p.add_argument("--reference-index", type=int, default=0, help="which code of a --reference .pt file")
    p.add_argument("--backbone", default=DEFAULTS["backbone"], help="backbone YAML (default: the toy world)")
    p.add_argument("--basis", default=DEFAULTS["basis"], help="StyleIPSB basis file")
    p.add_argument("--mapping", default=DEFAULTS["mapping"], help="stage-1 checkpoint (for --set / --transfer)")
    p.add_argument("--align", default="dlib", choices=("dlib", "center", "none"),
                   help="photo alignment: dlib landmarks + FFHQ crop, the centre square, or as is")
    p.add_argument("--inversion", default="auto", choices=("auto", "encoder", "optimize"),
                   help="auto: the backbone's encoder (e4e) if any, else optimisation")
    p.add_argument("--invert-steps", type=int, default=100, help="optimisation steps of an inversion")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi of --seed faces")
    p.add_argument("--measure-codes", type=int, default=16,
                   help="sampled faces on which attribute directions are measured (default 16)")
    p.add_argument("--tile", type=int, default=128, help="cell side in pixels")
    p.add_argument("--fps", type=float, default=6.0, help="animation frame rate")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for the toy world's many small ops)")
    return p


def parse_range(text: Optional[str]) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    parts = text.split(":")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        if len(parts) != 2:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"--range must look like LO:HI (e.g. -20:20), got {text!r}") from None
    return lo, hi


def parse_set(text: str) -> tuple[str, str, float]:
    m = SET_RE.match(text)
    if not m:
        raise ValueError(f"--set {text!r}: write NAME=VALUE, NAME+=VALUE or NAME-=VALUE (e.g. yaw+=20)")
    return m.group(1), m.group(2), float(m.group(3))


def check_outputs(args) -> None:
    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_EXTS:
        raise ValueError(f"--out must be an image file ({', '.join(IMAGE_EXTS)}), got '{out}'")
    paths = [out]
    if args.animation:
        anim = Path(args.animation)
        if anim.suffix.lower() not in (".gif", ".mp4"):
            raise ValueError(f"--animation must end in .gif or .mp4, got '{anim}'")
        paths.append(anim)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not args.overwrite:
        raise ValueError("output exists, not overwriting (pass --overwrite): " + ", ".join(existing))
    if args.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {args.steps}")
    if args.transfer and not args.reference:
        raise ValueError("--transfer needs --reference (a photo, a .pt W+ file or seed:N)")
    if args.reference and not args.transfer:
        raise ValueError("--reference is only used with --transfer")
    if (args.set or args.transfer) and args.along:
        raise ValueError("use either --along (edits along the basis) or --set/--transfer (3DMM control), not both")


def load_face(spec_kind: str, value, index: int, editor, args, name: str):
    """-> (W+ ``[1,num_ws,w_dim]``, image ``[3,R,R]`` shown for it or None)."""
    import torch

    bb = editor.backbone
    gen = bb.generator
    if spec_kind == "seed":
        return bb.sample_wplus(1, seed=int(value), truncation_psi=args.truncation).to(editor.device), None
    if spec_kind == "wplus":
        from ipsb.data.latents import load_wplus_file

        codes = load_wplus_file(value, gen.num_ws, gen.w_dim)
        if not 0 <= index < codes.shape[0]:
            raise ValueError(f"{name} index {index} is out of range: '{value}' holds {codes.shape[0]} codes")
        return codes[index:index + 1].to(editor.device), None
    from ipsb.data.simple_aligners import CenterCropAligner, IdentityAligner
    from ipsb.swap import FaceSwapper, load_rgb

    size = int(gen.resolution)
    aligner = {"center": CenterCropAligner(output_size=size), "none": IdentityAligner(output_size=size)}.get(args.align)
    # the swapper's alignment and inversion, without stages
    swapper = FaceSwapper(bb, None, aligner=aligner, inversion=args.inversion, invert_steps=args.invert_steps)
    aligned = swapper.align(load_rgb(value), name=str(value))
    with torch.no_grad():
        w = swapper.invert(aligned.image[None])
    return w, aligned.image


def _reference(args, editor):
    ref = args.reference
    if ref.startswith("seed:"):
        try:
            return load_face("seed", int(ref[5:]), 0, editor, args, "--reference")
        except ValueError:
            raise ValueError(f"--reference {ref!r}: write seed:N with an integer N") from None
    kind = "wplus" if Path(ref).suffix.lower() == ".pt" else "image"
    if not Path(ref).is_file():
        raise ValueError(f"--reference '{ref}' does not exist")
    return load_face(kind, ref, args.reference_index, editor, args, "--reference")


def build_editor(args):
    import torch

    from ipsb.backbone.bundle import FaceBackbone
    from ipsb.basis.artifact import Basis
    from ipsb.editing.editor import Editor

    backbone = FaceBackbone.from_config(args.backbone).to(torch.device(args.device))
    basis = mapping = None
    if args.set or args.transfer:
        from ipsb.stages.mapping_module import load_mapping_stage

        mapping = load_mapping_stage(str(args.mapping), backbone).to(torch.device(args.device)).eval()
    else:
        basis = Basis.load(args.basis, map_location=args.device)
    return Editor(backbone, basis=basis, mapping=mapping, measure_codes=args.measure_codes,
                  truncation_psi=args.truncation)


def linspace(lo: float, hi: float, n: int) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def basis_strips(editor, w, args, log) -> list:
    from ipsb.editing.editor import default_strips

    specs = args.along.split(",") if args.along else default_strips(editor.backbone.face_model, editor.basis)
    names = [n for s in specs if s.strip() for n in editor.strip_names(s)]
    if not names:
        raise ValueError("--along names nothing to draw")
    user = parse_range(args.range)
    strips = []
    for name in names:
        if editor.is_direction(name):
            lo, hi = user or (-2.0, 2.0)
            strips.append(editor.direction_strip(w, name, linspace(lo, hi, args.steps)))
        else:
            attr = editor.attribute(name)
            log(editor.describe(attr))
            if user is None:
                s = 1.5 * editor.attribute_spread(attr)
                lo, hi = -s, s
            else:
                lo, hi = user
            strips.append(editor.attribute_strip(w, name, linspace(lo, hi, args.steps)))
    return strips


def control_strips(editor, w, args) -> list:
    import torch

    strips = []
    fractions = linspace(0.0, 1.0, args.steps)
    if args.set:
        settings = []
        for text in args.set:
            name, op, value = parse_set(text)
            settings.append((editor.attribute(name), op, value))
        for attr, op, value in settings:
            label = f"{attr.name}{op}{value:g}"
            strips.append(editor.mapper_strip(w, label, lambda c, s=(attr, op, value): editor.set_target(c, [s]),
                                              fractions, [f"{f:.2f}" for f in fractions]))
        if len(settings) > 1:
            strips.append(editor.mapper_strip(w, "all --set", lambda c: editor.set_target(c, settings),
                                              fractions, [f"{f:.2f}" for f in fractions]))
    if args.transfer:
        from ipsb.editing.editor import expand_transfer

        groups = [g.strip() for g in args.transfer.split(",") if g.strip()]
        expand_transfer(groups, editor.backbone.face_model.coeff_groups)          # names checked first
        w_ref, ref_img = _reference(args, editor)
        if ref_img is None:
            ref_img = editor.render(w_ref)[0]
        coeff_ref = editor.coefficients(w_ref)
        rows = [[g] for g in groups] + ([groups] if len(groups) > 1 else [])
        for gs in rows:
            strips.append(editor.mapper_strip(
                w, "from reference: " + "+".join(gs), lambda c, gs=gs: editor.transfer_target(c, coeff_ref, gs),
                fractions, [f"{f:.2f}" for f in fractions], reference_image=ref_img.to(torch.float32)))
    return strips


def run(args, log=print) -> list[Path]:
    """The command without the error handling; returns the files written."""
    import torch

    from ipsb.editing.grid import Strip, draw_grid, write_animation

    check_outputs(args)
    torch.set_num_threads(max(1, args.threads))
    if args.image is not None and not Path(args.image).is_file():
        raise ValueError(f"--image '{args.image}' does not exist")
    if args.wplus is not None and not Path(args.wplus).is_file():
        raise ValueError(f"--wplus '{args.wplus}' does not exist")
    for text in args.set:
        parse_set(text)
    editor = build_editor(args)
    kind, value = next((k, getattr(args, k)) for k in ("image", "wplus", "seed") if getattr(args, k) is not None)
    w, shown = load_face(kind, value, args.index, editor, args, f"--{kind}")
    with torch.no_grad():
        recon = editor.render(w)[0]
    first = Strip("input", [shown, recon] if shown is not None else [recon],
                  ["photo (aligned)", "inversion"] if shown is not None else [f"{kind} {value}"])
    strips = control_strips(editor, w, args) if (args.set or args.transfer) else basis_strips(editor, w, args, log)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = ("3DMM control through the stage-1 mapper" if (args.set or args.transfer)
             else "edits along the StyleIPSB basis")
    draw_grid([first] + strips, args.tile, title).save(out)
    written = [out]
    if args.animation:
        Path(args.animation).parent.mkdir(parents=True, exist_ok=True)
        written.append(write_animation(strips, args.animation, args.tile, args.fps))
    for p in written:
        log(str(p))
    return written


def _attach_ranges(argv: list[str]) -> list[str]:
    """``--range -20:20`` -> ``--range=-20:20`` (argparse would read ``-20:20`` as an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--range" and i + 1 < len(argv) and RANGE_RE.match(argv[i + 1]):
            out.append(f"--range={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit code 0; a usage error exits 2 with one line; other errors reach the ``ipsb`` command's
    error boundary (one line, exit code 2)."""
    try:
        args = build_parser().parse_args(_attach_ranges(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as e:
        return int(e.code or 0)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
