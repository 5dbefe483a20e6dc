"""``ipsb align``: FFHQ-align photos with dlib (writes the crop and its alignment record).

    ipsb align photo.jpg [more.png ...] --out aligned/ [--size 256] [--select score|largest]

For each input ``<stem>.png`` (the crop) and ``<stem>.json`` (``matrix`` original->crop, ``quad``,
``landmarks``, ``source``) are written to ``--out``; :func:`ipsb.data.align.paste_back` takes the
matrix to put an edited crop back. Images without a face are reported and skipped (exit code 1).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import numpy as np
    from PIL import Image

    from ipsb.data.align import FaceAligner, NoFaceError

    p = argparse.ArgumentParser(prog="ipsb align", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size", type=int, default=256, help="crop side (256 or 1024)")
    p.add_argument("--select", choices=("score", "largest"), default="score")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    aligner = FaceAligner(output_size=args.size, select=args.select)
    failed = 0
    for path in args.images:
        try:
            image = np.asarray(Image.open(path))
            face = aligner.align(image, name=str(path))
        except (NoFaceError, OSError, ValueError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        crop = ((face.image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(crop).save(args.out / f"{path.stem}.png")
        record = {"source": str(path), "size": args.size, "matrix": face.matrix.tolist(),
                  "quad": face.quad.tolist(), "landmarks": face.landmarks.tolist()}
        (args.out / f"{path.stem}.json").write_text(json.dumps(record, indent=1))
        print(f"aligned {path} -> {args.out / (path.stem + '.png')}")
    return 1 if failed else 0
