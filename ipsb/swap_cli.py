"""``ipsb swap``: put the face of a source photo onto a target photo, a video, or every file of a folder.

    ipsb swap --source A.jpg --target B.jpg --out C.png
    ipsb swap --source A.jpg --target clip.mp4 --out swapped.mp4        # audio-free mp4, progress bar
    ipsb swap --source A.jpg --target photos/ --out swapped/             # batch: images and videos

The stages come from their checkpoints (``--mapping``, ``--detail``, ``--blend``; defaults: the trained
toy stages that ship with ipsb, :func:`ipsb.assets.toy_stage_path`) and the backbone from
``--backbone`` (a YAML of ``lightning_configs/backbone/``; default: the toy world's). An existing output is never overwritten unless ``--overwrite``;
in batch mode every output is checked before anything is written, and two inputs that would write
one output (``a.png`` and ``a.jpg`` -> ``a.png``) are refused, naming both. Video frames without a
face are copied unchanged and counted. The output folder is checked (writable, some free space)
before any model is built; images are written through a temporary file and a rename. Exit code 0
on success; an error ends in one line on stderr and exit code 2 (the ``ipsb`` command's error
boundary, :mod:`ipsb.error_boundary`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ipsb.data.output_plan import check_distinct_outputs, check_no_existing, check_output_folder, write_atomic

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
#: free space asked of the output folder before the models are built (a few swapped images)
MIN_FREE_BYTES = 16 << 20


def build_parser() -> argparse.ArgumentParser:
    from ipsb.assets import config_path, toy_stage_path

    p = argparse.ArgumentParser(prog="ipsb swap", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="image with the face to use (identity)")
    p.add_argument("--target", required=True, help="image, video, or a folder of them (the face is replaced)")
    p.add_argument("--out", required=True, help="output image / .mp4, or a folder in batch mode")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--backbone", default=str(config_path("backbone/toy.yaml")),
                   help="backbone YAML (default: the toy world)")
    p.add_argument("--mapping", default=str(toy_stage_path("mapping")),
                   help="stage-1 checkpoint (default: the shipped toy stage)")
    p.add_argument("--detail", default=str(toy_stage_path("detail")),
                   help="stage-2 checkpoint (default: the shipped toy stage)")
    p.add_argument("--blend", default=str(toy_stage_path("blend")),
                   help="stage-3 checkpoint ('none': skip blending; default: the shipped toy stage)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--inversion", default="auto", choices=("auto", "encoder", "optimize"),
                   help="auto: the backbone's encoder (e4e) if any, else optimisation")
    p.add_argument("--invert-steps", type=int, default=100, help="optimisation steps per image")
    p.add_argument("--invert-lr", type=float, default=0.05)
    p.add_argument("--align-size", type=int, default=None, help="aligned crop side (default: generator's)")
    p.add_argument("--smooth-landmarks", type=float, default=0.5, help="video: EMA weight of the previous frame")
    p.add_argument("--smooth-latents", type=float, default=0.5, help="video: EMA weight of the previous frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def plan(target: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input, output) jobs: one for a file, one per image/video in a folder (sorted); ValueError when
    two inputs of the folder would write one output."""
    if target.is_dir():
        if out.exists() and not out.is_dir():
            raise ValueError(f"--target is a folder, so --out must be a folder; '{out}' is a file")
        files = sorted(f for f in target.iterdir() if f.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) or videos ({', '.join(VIDEO_EXTS)}) in '{target}'")
        jobs = [(f, out / (f.stem + (".mp4" if f.suffix.lower() in VIDEO_EXTS else ".png"))) for f in files]
        check_distinct_outputs(jobs)  # a.png and a.jpg would both write out/a.png
        return jobs
    if not target.is_file():
        raise ValueError(f"--target '{target}' does not exist")
    kind = target.suffix.lower()
    if kind in VIDEO_EXTS and out.suffix.lower() != ".mp4":
        raise ValueError(f"a video target is written as mp4: --out must end in .mp4, got '{out}'")
    if kind in IMAGE_EXTS and out.suffix.lower() not in IMAGE_EXTS:
        raise ValueError(f"an image target needs an image --out ({', '.join(IMAGE_EXTS)}), got '{out}'")
    if kind not in IMAGE_EXTS + VIDEO_EXTS:
        raise ValueError(f"unknown target type '{target.suffix}' (images: {IMAGE_EXTS}, videos: {VIDEO_EXTS})")
    return [(target, out)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ipsb swap``; errors raise (the ``ipsb`` command reports them in one line, exit code 2)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    target, out = Path(args.target), Path(args.out)
    jobs = plan(target, out)
    check_no_existing([o for _, o in jobs], args.overwrite)
    if not Path(args.source).is_file():
        raise ValueError(f"--source '{args.source}' does not exist")
    check_output_folder(out if target.is_dir() else out.parent, MIN_FREE_BYTES, "the swapped images")
    from ipsb.swap import load_rgb

    source = load_rgb(args.source)         # an unreadable source is named before the models are built
    swapper = _build(args)
    return _run(swapper, args, jobs, source)


def _build(args):
    import torch

    from ipsb.swap import FaceSwapper

    blend = None if str(args.blend).lower() == "none" else args.blend
    swapper = FaceSwapper.from_checkpoints(args.mapping, args.detail, blend, args.backbone,
                                           inversion=args.inversion, invert_steps=args.invert_steps,
                                           invert_lr=args.invert_lr, align_size=args.align_size,
                                           smooth_landmarks=args.smooth_landmarks,
                                           smooth_latents=args.smooth_latents)
    return swapper.to(torch.device(args.device))


def _run(swapper, args, jobs, source) -> int:
    from PIL import Image

    from ipsb.data.align import NoFaceError
    from ipsb.swap import load_rgb

    skipped = []
    for target, out in jobs:
        out.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix.lower() in VIDEO_EXTS:
            report = swapper.swap_video(source, target, out, progress=not args.no_progress,
                                        source_name=args.source)
            print(f"{out}: {report.frames} frames, {report.no_face} without a face (copied unchanged)")
            continue
        try:
            frame = swapper.swap_image(source, load_rgb(target), source_name=args.source, target_name=str(target))
        except NoFaceError as e:
            if len(jobs) == 1 or args.source in str(e):
                raise
            skipped.append(str(target))
            print(f"{target}: skipped, {e}", file=sys.stderr)
            continue
        write_atomic(out, lambda tmp: Image.fromarray(frame).save(tmp, format=_pil_format(out)))
        print(f"{out}")
    if skipped:
        print(f"{len(skipped)} image(s) without a face were skipped", file=sys.stderr)
    return 0


def _pil_format(path: Path) -> str:
    """PIL's format name for an output suffix (the temporary file's own suffix is ``.tmp``)."""
    from PIL import Image

    Image.init()
    return Image.EXTENSION[path.suffix.lower()]


if __name__ == "__main__":
    from ipsb.cli import main as ipsb_main

    sys.exit(ipsb_main(["swap", *sys.argv[1:]]))
