"""Retrain the toy stages that ship with ipsb (``ipsb/assets/toy/stages/``); the recipe is the shipped configs.

    python -m ipsb.training.toy_stages --out DIR              # train into DIR
    python -m ipsb.training.toy_stages --out DIR --overwrite  # ... then replace the shipped stages

Runs the four toy stage configs with ``ipsb fit``, in order, each in a subprocess whose working
directory is ``DIR`` (so the configs' run folders land in ``DIR/outputs/toy/``). The only overrides
move the files one stage hands to the next into ``DIR``, named by bare file names::

    ipsb fit --config toy/basis.yaml   --model.init_args.output_path basis.pt
    ipsb fit --config toy/mapping.yaml --model.init_args.basis basis.pt              -> mapping.ckpt
    ipsb fit --config toy/detail.yaml  --model.init_args.mapping_checkpoint mapping.ckpt -> detail.ckpt
    ipsb fit --config toy/blend.yaml   --model.init_args.detail_checkpoint detail.ckpt   -> blend.ckpt

(``-> X.ckpt``: the run's last checkpoint, ``outputs/toy/<stage>/checkpoints/last.ckpt``, copied to
``DIR/X.ckpt`` after checking that it holds the config's final step.) Each checkpoint therefore names
its inputs relative to its own folder, so the folder can be moved or shipped as a whole
(:func:`ipsb.checkpoints.load_stage_checkpoint` looks next to a checkpoint for a relative path the
working directory does not have). ``DIR/toy_stages.json`` records each file's size, sha256 and
training time. ``--overwrite`` then copies the four files over the shipped ones; without it they are
left as they are. ``--max-steps`` / ``--basis-samples`` shorten the recipe (tests only: the shipped
stages use the configs' own counts).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ipsb.assets import TOY_STAGE_FILES, TOY_STAGES, config_path
from ipsb.checkpoints import sha256_file

#: stage -> (the override that moves its input file into DIR, the file it writes in DIR).
RECIPE = {
    "basis": (("output_path", TOY_STAGE_FILES["basis"]), TOY_STAGE_FILES["basis"]),
    "mapping": (("basis", TOY_STAGE_FILES["basis"]), TOY_STAGE_FILES["mapping"]),
    "detail": (("mapping_checkpoint", TOY_STAGE_FILES["mapping"]), TOY_STAGE_FILES["detail"]),
    "blend": (("detail_checkpoint", TOY_STAGE_FILES["detail"]), TOY_STAGE_FILES["blend"]),
}
RECORD = "toy_stages.json"


def fit_command(stage: str, max_steps: Optional[int] = None, basis_samples: Optional[int] = None) -> list[str]:
    """The ``ipsb fit`` argv (after ``python -m ipsb``) of one stage of the recipe."""
    (arg, value), _ = RECIPE[stage]
    argv = ["fit", "--config", str(config_path(f"toy/{stage}.yaml")), f"--model.init_args.{arg}", value]
    if stage == "basis" and basis_samples is not None:
        argv += ["--data.init_args.num_samples", str(basis_samples)]
    if stage != "basis" and max_steps is not None:
        argv += ["--trainer.max_steps", str(max_steps)]
    return argv


def _config_steps(stage: str, max_steps: Optional[int]) -> int:
    import yaml

    return int(max_steps if max_steps is not None
               else yaml.safe_load(config_path(f"toy/{stage}.yaml").read_text())["trainer"]["max_steps"])


def _last_checkpoint(stage: str, out: Path, steps: int) -> Path:
    """The run's ``last.ckpt`` (from the config's ModelCheckpoint folder), checked to hold step ``steps``."""
    import torch
    import yaml

    cfg = yaml.safe_load(config_path(f"toy/{stage}.yaml").read_text())
    dirs = [c["init_args"]["dirpath"] for c in cfg["trainer"].get("callbacks") or []
            if c.get("class_path", "").endswith("ModelCheckpoint")]
    if len(dirs) != 1:
        raise ValueError(f"toy/{stage}.yaml must have one ModelCheckpoint callback with a dirpath, found {len(dirs)}")
    last = out / dirs[0] / "last.ckpt"
    step = torch.load(last, map_location="cpu", weights_only=True).get("global_step")
    if step != steps:
        raise RuntimeError(f"'{last}' holds step {step}, not the run's last step {steps}")
    return last


def train(out: str | os.PathLike, max_steps: Optional[int] = None, basis_samples: Optional[int] = None,
          threads: int = 1, log=print) -> dict:
    """Run the recipe into ``out`` (module docstring); returns the record written to ``out/toy_stages.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    taken = [f for f in (*TOY_STAGE_FILES.values(), RECORD) if (out / f).exists()]
    if taken:
        raise FileExistsError(f"'{out}' already holds {', '.join(taken)}; choose an empty --out folder")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    record = {"recipe": "python -m ipsb.training.toy_stages", "max_steps": max_steps,
              "basis_samples": basis_samples, "threads": threads, "stages": {}}
    for stage, (_, name) in RECIPE.items():
        argv = fit_command(stage, max_steps, basis_samples)
        log(f"[toy_stages] {stage}: ipsb {' '.join(argv)}  (in {out})")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ipsb", *argv], cwd=out, env=env, check=True)
        seconds = time.perf_counter() - t0
        if stage != "basis":
            shutil.copyfile(_last_checkpoint(stage, out, _config_steps(stage, max_steps)), out / name)
        f = out / name
        record["stages"][stage] = {"file": name, "bytes": f.stat().st_size, "sha256": sha256_file(f),
                                   "seconds": round(seconds, 1)}
        log(f"[toy_stages] {stage}: {seconds:.0f} s -> {f} ({f.stat().st_size} bytes)")
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def install(out: str | os.PathLike, dest: Path = TOY_STAGES, log=print) -> None:
    """Copy the four files of a finished run in ``out`` over the shipped stages in ``dest``."""
    out = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOY_STAGE_FILES.values():
        shutil.copyfile(out / name, dest / name)
        log(f"[toy_stages] {dest / name} <- {out / name}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ipsb.training.toy_stages", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="an empty folder to train in")
    p.add_argument("--overwrite", action="store_true",
                   help=f"then replace the shipped stages ({TOY_STAGES}) with the results")
    p.add_argument("--max-steps", type=int, default=None, help="cap every stage's steps (tests; default: the configs')")
    p.add_argument("--basis-samples", type=int, default=None, help="basis samples (tests; default: the config's)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1: fastest for the toy world)")
    args = p.parse_args(argv)
    try:
        train(args.out, args.max_steps, args.basis_samples, args.threads)
    except (FileExistsError, RuntimeError, ValueError) as e:
        print(f"toy_stages: error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"toy_stages: error: `ipsb {' '.join(e.cmd[3:])}` failed (exit {e.returncode})", file=sys.stderr)
        return 1
    if args.overwrite:
        install(args.out)
    else:
        print(f"[toy_stages] the shipped stages in {TOY_STAGES} are unchanged (pass --overwrite to replace them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
