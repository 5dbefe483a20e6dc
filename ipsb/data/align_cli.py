"""``ipsb align``: FFHQ-align photos with dlib (writes the crop and its alignment record).

    ipsb align photo.jpg [more.png ...] --out aligned/ [--size 256] [--select score|largest]
    ipsb align photos/ --out aligned/ [--overwrite]

Inputs are image files or folders (their images, not recursive). For each input ``<stem>.png`` (the
crop, the FFHQ recipe: ``docs/data.md``) and ``<stem>.json`` (``matrix`` original->crop, ``quad``,
``landmarks``, ``source``) are written to ``--out``; :func:`ipsb.data.align.paste_back` takes the
matrix to put an edited crop back.

Before any compute the plan is checked: two inputs with one stem (``a.png`` and ``a.jpg``, or the
same name in two folders) are refused, naming both (rename one, or align them into different
folders); existing outputs are refused unless ``--overwrite``; the output folder must be writable.
Outputs are written to a temporary file and renamed, so an interrupted run leaves no half file.
Images without a face, or unreadable ones, are reported and skipped. Exit code 0: all aligned;
1: some skipped; 2: nothing done (a usage or plan error, one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "ipsb align"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size", type=int, default=256, help="crop side (256 or 1024)")
    p.add_argument("--select", choices=("score", "largest"), default="score",
                   help="with several faces: dlib's most confident one, or the largest")
    p.add_argument("--transform-size", type=int, default=None,
                   help="side of the supersampled quad transform (default 4 x --size; the recipe's 4096)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def plan(inputs: list[Path], out: Path) -> list[tuple[Path, Path, Path]]:
    """Inputs (files or folders) -> [(image, crop .png, record .json)]; OutputPlanError on a clash."""
    from ipsb.data.image_reader import IMAGE_SUFFIXES
    from ipsb.data.output_plan import OutputPlanError, check_distinct_outputs

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise OutputPlanError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{path}'")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise OutputPlanError(f"input '{path}' does not exist")
    unique, seen = [], set()
    for f in files:  # the same file named twice is aligned once
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    jobs = [(f, out / f"{f.stem}.png", out / f"{f.stem}.json") for f in unique]
    check_distinct_outputs([(f, png) for f, png, _ in jobs])
    return jobs


def main(argv: list[str]) -> int:
    """Run ``ipsb align``; plan errors raise (the ``ipsb`` command reports them in one line, exit 2)."""
    from ipsb.data.output_plan import check_no_existing, check_writable_folder

    args = build_parser().parse_args(argv)
    if args.size < 8:
        raise ValueError(f"--size must be >= 8, got {args.size}")
    jobs = plan(args.images, args.out)
    check_no_existing([p for _, png, js in jobs for p in (png, js)], args.overwrite)
    check_writable_folder(args.out)
    return _run(jobs, args)


def _run(jobs, args) -> int:
    from PIL import Image

    from ipsb.data.align import FaceAligner, NoFaceError
    from ipsb.data.image_reader import ImageReadError, read_rgb
    from ipsb.data.output_plan import write_atomic

    aligner = FaceAligner(output_size=args.size, select=args.select, transform_size=args.transform_size)
    failed = 0
    for path, png, record_path in jobs:
        try:
            face = aligner.align(read_rgb(path), name=str(path))
        except (NoFaceError, ImageReadError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        crop = ((face.image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        record = {"source": str(path), "size": args.size, "transform_size": aligner.transform_size,
                  "matrix": face.matrix.tolist(), "quad": face.quad.tolist(), "landmarks": face.landmarks.tolist()}
        try:
            write_atomic(png, lambda tmp: Image.fromarray(crop).save(tmp, format="PNG"))
            write_atomic(record_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
        except OSError as e:
            print(f"{PROG}: error: cannot write '{png}': {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"aligned {path} -> {png}")
    if failed:
        print(f"{failed} of {len(jobs)} image(s) skipped", file=sys.stderr)
    return 1 if failed else 0
