"""The documented command chains, run through the ``ipsb`` command in a working directory laid out
like a checkout of the repository (a copy of ``lightning_configs/``), as a user types them.

* :func:`run_toy_chain`: the toy world. ``ipsb predict`` (toy inversion) -> basis -> mapping ->
  detail -> blend -> ``ipsb swap`` of a photo and of a video with the trained stage checkpoints ->
  ``ipsb test`` with ``eval/ffpp_toy.yaml`` with its IpsbSwapper block uncommented, as its comment
  says -> ``ipsb demo --train``; and the README's other toy-world commands (``ipsb align`` of a photo,
  ``ipsb edit`` on the shipped stages).
* :func:`run_standin_chain`: the official configs on the stand-in official checkpoints
  (``$IPSB_CHECKPOINTS``): ``ipsb align`` of real photographs -> ``ipsb predict --config
  lightning_configs/invert.yaml`` on the aligned crops -> basis -> mapping -> detail -> blend -> ``ipsb swap`` on a real photograph -> ``ipsb test``
  with ``eval/ffpp.yaml`` on a tiny FF++ tree (the dataset's swaps, then with the ipsb swapper row too)
  and with ``eval/celebahq.yaml`` (a folder of swaps, then the ipsb swapper).

Every command is the documented text (:mod:`helpers.documented_commands`; :meth:`Chain.ipsb`
refuses any other), run with its optional ``[...]`` part left out, with placeholder paths that
cannot exist in a test (``/path/to/FaceForensics++``) pointed at the test's data, and with only
step and size options appended (:data:`FAST` / :data:`FULL`; the fast stage fits also skip
Lightning's sanity validation). Inputs that the documented command
names relatively (``A.png``, ``A.jpg``, ``data/ffhq/images1024x1024``, ``pairs.txt``) are created right there.

Size overrides the official configs need on the 64 px stand-in generator: the MSFT ``resolutions``
(feature resolutions of the generator: 4..64 here) and its ``input_size``. Everything else (W+ rows,
mask sizes, crop sizes) follows the generator. Three options are not sizes and are said here:
the fast basis drops the identity metric (``use_identity false``: its 512 Jacobian rows through the
full-size IR-SE50 take ~100 s per sample on one CPU core; the full variant keeps it); the
CelebA-HQ runs replace the FID Inception (``fid_helper_default_1.pt`` is pinned by its sha256, so
no stand-in can exist) by the Deep3D coefficients as FID features; and the second run of each
benchmark, which writes the same table as the first (as a user running both would), passes
``--model.init_args.overwrite true``, as the refusal of the first attempt tells.

Inputs: the toy world's inputs are real photographs too, because ``ipsb swap`` aligns with dlib and
dlib finds no face in a toy render; the toy inversion reads toy renders (aligned by construction).

``in_process=True`` runs ``ipsb.cli.main(argv)`` in this process (the same entry point as the
console script, minus the interpreter start); ``False`` runs ``python -m ipsb`` subprocesses. Both
use one CPU thread: the toy world's many small ops run fastest so, and a shared machine is not
oversubscribed.
:attr:`Chain.timings` holds each command's wall and CPU seconds (this process and its children).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
from PIL import Image

from helpers.documented_commands import COVERED, registered

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "fixtures" / "photos"


def strip_optional(argv: Sequence[str]) -> list[str]:
    """Leave out ``[...]`` groups (optional options) of a split command line."""
    out, depth = [], 0
    for a in argv:
        if a.startswith("[") and depth == 0:
            depth = 1
        if depth == 0:
            out.append(a)
        if a.endswith("]") and depth:
            depth = 0
    return out


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Chain:
    """A working directory, the environment of its commands and what ran there.

    ``name``: the chain's key in :data:`helpers.documented_commands.COVERED`; ``root``: the working
    directory (``lightning_configs/`` is copied into it); ``env``: variables set for every command.
    """

    name: str
    root: Path
    env: dict = field(default_factory=dict)
    in_process: bool = True
    ran: list = field(default_factory=list)
    timings: list = field(default_factory=list)
    checkout: bool = True                      #: copy lightning_configs/ into ``root`` (a checkout's layout)

    def __post_init__(self):
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.checkout and not (self.root / "lightning_configs").exists():
            shutil.copytree(REPO / "lightning_configs", self.root / "lightning_configs")

    def path(self, rel: str) -> Path:
        return self.root / rel

    @contextlib.contextmanager
    def inside(self):
        """This chain's working directory and environment, one torch thread (restored afterwards)."""
        import torch

        saved = {k: os.environ.get(k) for k in self.env}
        threads = torch.get_num_threads()
        os.environ.update(self.env)
        torch.set_num_threads(1)
        try:
            with contextlib.chdir(self.root):
                yield
        finally:
            torch.set_num_threads(threads)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def ipsb(self, documented: str, *extra: str, replace: Optional[dict] = None, expect: int = 0) -> str:
        """Run a documented command (optional part left out, ``replace`` applied to its words, ``extra``
        appended) -> its error output; AssertionError with that output when its exit code is not
        ``expect``. Only a command that exited with 0 counts as run (:meth:`uncovered`)."""
        command = registered(documented, self.name)
        argv = [(replace or {}).get(a, a) for a in strip_optional(shlex.split(command))]
        assert argv[0] == "ipsb"
        argv = argv[1:] + list(extra)
        start, cpu = time.perf_counter(), cpu_seconds()
        if self.in_process:
            from ipsb.cli import main

            err = io.StringIO()
            with self.inside(), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                finally:
                    _finish_wandb_run()
            detail = err.getvalue()
            sys.stderr.write(detail)
        else:
            env = {**os.environ, **self.env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                [str(REPO), os.environ.get("PYTHONPATH", "")])}
            proc = subprocess.run([sys.executable, "-m", "ipsb", *argv], cwd=self.root, env=env,
                                  capture_output=True, text=True, timeout=3600)
            rc, detail = proc.returncode, proc.stdout[-2000:] + proc.stderr[-5000:]
        self.timings.append((" ".join(argv[:3]), time.perf_counter() - start,
                             cpu_seconds() - cpu))
        assert rc == expect, f"`{' '.join(argv)}` exited with {rc}\n{detail}"
        if rc == 0:
            self.ran.append(" ".join(strip_optional(shlex.split(command))))
        return detail

    def uncovered(self) -> set[str]:
        """Commands registered to this chain that it has not run (optional parts left out)."""
        mine = {" ".join(strip_optional(shlex.split(c))) for c, who in COVERED.items() if who == self.name}
        return mine - set(self.ran)

    def report(self) -> str:
        rows = [f"{what:<60} {wall:7.1f} s wall {cpu:7.1f} s CPU" for what, wall, cpu in self.timings]
        wall, cpu = sum(t[1] for t in self.timings), sum(t[2] for t in self.timings)
        return "\n".join(rows + [f"{self.name + ' chain total':<60} {wall:7.1f} s wall {cpu:7.1f} s CPU"])


#: W&B offline, and without its console capture: in one process, its capture thread writes the run's
#: output.log under the run's relative folder after the command returned, i.e. outside the chain's folder
WANDB = {"WANDB_MODE": "offline", "WANDB_CONSOLE": "off"}


def _finish_wandb_run() -> None:
    """Close the W&B run a command left open: each command of a user is its own process, but
    Lightning's WandbLogger leaves its run open, and in one process the next fit would log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


# ----------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    """Step and size options of one variant of the chains."""

    toy_steps: int
    toy_basis_samples: int
    toy_invert_steps: int
    video_frames: int
    standin_steps: int
    basis_options: tuple
    ffpp_frames: int
    sanity_val_steps: Optional[int]
    standin_batch: int


FAST = Sizes(toy_steps=3, toy_basis_samples=4, toy_invert_steps=2, video_frames=3,
             standin_steps=2, ffpp_frames=2, sanity_val_steps=0, standin_batch=1,
             basis_options=("--data.init_args.num_samples", "1", "--data.init_args.batch_size", "1",
                            "--model.init_args.use_identity", "false", "--model.init_args.chunk_size", "16",
                            "--model.init_args.k", "{pose: 3, exp: 4, light: 2}"))
FULL = Sizes(toy_steps=20, toy_basis_samples=16, toy_invert_steps=10, video_frames=8,
             standin_steps=6, ffpp_frames=3, sanity_val_steps=None, standin_batch=2,
             basis_options=("--data.init_args.num_samples", "2", "--data.init_args.batch_size", "1"))

QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


def stage_sizes(steps: int, sanity_val_steps: Optional[int] = None, codes_file: bool = False,
                batch_size: int = 2) -> list[str]:
    """Steps, batch sizes and checkpoint interval of a stage fit (``codes_file``: LatentFileDataModule;
    ``sanity_val_steps``: Lightning's validation batches before training, None: the config's)."""
    # codes file: two held-out codes, four pairs among them (one batch), so that both are targets
    # (SwapEvaluation's FID needs two)
    val_pairs = 4 if codes_file else 2
    out = [] if sanity_val_steps is None else ["--trainer.num_sanity_val_steps", str(sanity_val_steps)]
    out += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--data.init_args.batch_size", str(batch_size), "--data.init_args.num_val_pairs", str(val_pairs),
            "--data.init_args.val_batch_size", str(val_pairs),
            "--trainer.callbacks.init_args.every_n_train_steps", str(steps), *QUIET]
    return out + (["--data.init_args.num_val_codes", "2"] if codes_file else [])


#: MSFT sizes of the 64 px stand-in generator (module docstring)
STANDIN_BLEND = ("--model.init_args.resolutions", "[16, 32, 64]", "--model.init_args.input_size", "64")


def stage_options(world: str, stage: str, sizes: Sizes) -> list[str]:
    """The options a chain appends to the documented fit of ``stage`` (mapping, detail or blend) in
    ``world`` (``"toy"`` or ``"standin"``)."""
    if world == "toy":
        return stage_sizes(sizes.toy_steps)
    out = stage_sizes(sizes.standin_steps, sizes.sanity_val_steps, codes_file=True, batch_size=sizes.standin_batch)
    return out + list(STANDIN_BLEND if stage == "blend" else ())


# ----------------------------------------------------------------------------------------------- inputs
def square_face(name: str, size: int = 256) -> np.ndarray:
    """A fixture photograph cropped square around its face and resized to ``size`` (uint8 RGB)."""
    im = Image.open(PHOTOS / name).convert("RGB")
    w, h = im.size
    side = min(w, h)
    top = {"grace_hopper.jpg": 20}.get(name, (h - side) // 2)
    return np.asarray(im.crop(((w - side) // 2, top, (w - side) // 2 + side, top + side))
                      .resize((size, size), Image.Resampling.LANCZOS))


def drifting(face: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` frames of ``face`` moving by a few pixels per frame (a talking-head stand-in)."""
    return [np.ascontiguousarray(np.roll(face, (2 * i, 3 * i), (0, 1))) for i in range(n)]


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Frames -> lossless mp4 with ipsb's writer (:mod:`ipsb.video_io`)."""
    from ipsb.video_io import Mp4Writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(path, fps, lossless=True) as writer:
        for f in frames:
            writer.write(f)
    return path


def photo_pair(root: Path, suffix: str = ".jpg") -> tuple[Path, Path]:
    """``A<suffix>`` (source: the astronaut) and ``B<suffix>`` (target: Grace Hopper) in ``root``, as
    named in the docs."""
    a, b = root / f"A{suffix}", root / f"B{suffix}"
    for src, dst in (("astronaut.jpg", a), ("grace_hopper.jpg", b)):
        if suffix == ".jpg":
            shutil.copyfile(PHOTOS / src, dst)
        else:
            Image.open(PHOTOS / src).convert("RGB").save(dst)
    return a, b


def ffpp_tree(root: Path, frames: int, method: str = "FaceShifter") -> Path:
    """A tiny FF++ tree (c23): two identities (astronaut, Grace Hopper) as drifting videos, each the
    target of the other; the method's "swaps" are the target frames mirrored."""
    from ipsb.data.ffpp_index import manipulated_dir, original_dir

    faces = [square_face("astronaut.jpg"), square_face("grace_hopper.jpg")]
    for i, face in enumerate(faces):
        clip = drifting(face, frames)
        write_mp4(root / original_dir("c23") / f"{i:03d}.mp4", clip)
        write_mp4(root / manipulated_dir(method, "c23") / f"{i:03d}_{(i + 1) % len(faces):03d}.mp4",
                  [np.ascontiguousarray(f[:, ::-1]) for f in clip])
    return root


def celebahq_folder(root: Path) -> tuple[Path, Path, Path]:
    """``root/images`` (three square face photos), ``root/pairs.txt`` (2 pairs) and ``root/swaps``
    (``000000.png``...: the targets mirrored) -> (images, pairs file, swaps)."""
    images, swaps = root / "images", root / "swaps"
    images.mkdir(parents=True, exist_ok=True)
    swaps.mkdir(parents=True, exist_ok=True)
    names = {"astronaut.png": "astronaut.jpg", "grace.png": "grace_hopper.jpg", "camera.png": "camera.png"}
    for out, src in names.items():
        Image.fromarray(square_face(src)).save(images / out)
    pairs = [("astronaut.png", "grace.png"), ("grace.png", "camera.png")]
    (root / "pairs.txt").write_text("".join(f"{s} {t}\n" for s, t in pairs))
    for i, (_, t) in enumerate(pairs):
        Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(images / t))[:, ::-1])).save(swaps / f"{i:06d}.png")
    return images, root / "pairs.txt", swaps


def table(path: Path) -> dict:
    """A results table's JSON: ``{row name: row}``."""
    return {row["method"]: row for row in json.loads(Path(path).read_text())["rows"]}


# ----------------------------------------------------------------------------------------------- toy chain
TOY_SWAPPER_BLOCK = "      # - class_path: ipsb.eval.methods.IpsbSwapper\n"
TOY_STAGES = ("--mapping outputs/toy/mapping/checkpoints/last.ckpt --detail outputs/toy/detail/checkpoints/last.ckpt "
              "--blend outputs/toy/blend/checkpoints/last.ckpt")


def uncomment_ipsb_swapper(config: Path) -> None:
    """Uncomment the IpsbSwapper block of ``eval/ffpp_toy.yaml``, as its comment says."""
    lines = config.read_text().splitlines(keepends=True)
    start = lines.index(TOY_SWAPPER_BLOCK)
    i = start
    while i < len(lines) and lines[i].startswith("      # "):
        lines[i] = "      " + lines[i][len("      # "):]
        i += 1
    assert i - start >= 6, "the IpsbSwapper block of ffpp_toy.yaml is shorter than expected"
    config.write_text("".join(lines))


def run_toy_chain(root: Path, sizes: Sizes = FAST, in_process: bool = True) -> Chain:
    """The toy chain (module docstring) in ``root``; returns the :class:`Chain` with its timings."""
    from helpers.inversion_photos import toy_photos
    from helpers.swap_world import toy_backbone

    chain = Chain("toy", root, dict(WANDB), in_process)
    toy_photos(chain.path("path/to/toy/photos"), toy_backbone(64), n=4)
    photo_pair(chain.root, ".png")
    write_mp4(chain.path("clip.mp4"), drifting(square_face("grace_hopper.jpg"), sizes.video_frames))
    uncomment_ipsb_swapper(chain.path("lightning_configs/eval/ffpp_toy.yaml"))

    chain.ipsb("ipsb predict --config lightning_configs/toy/invert.yaml --data.init_args.root path/to/toy/photos",
               "--model.init_args.steps", str(sizes.toy_invert_steps), "--data.init_args.batch_size", "2",
               "--trainer.enable_progress_bar", "false")
    chain.ipsb("ipsb fit --config lightning_configs/toy/basis.yaml",
               "--data.init_args.num_samples", str(sizes.toy_basis_samples), "--data.init_args.batch_size", "2",
               *QUIET)
    for stage in ("mapping", "detail", "blend"):
        chain.ipsb(f"ipsb fit --config lightning_configs/toy/{stage}.yaml", *stage_options("toy", stage, sizes))
    chain.ipsb(f"ipsb swap --source A.png --target B.png --out C.png {TOY_STAGES}")
    chain.ipsb(f"ipsb swap --source A.png --target clip.mp4 --out swapped.mp4 {TOY_STAGES}", "--no-progress")
    chain.ipsb("ipsb test --config lightning_configs/eval/ffpp_toy.yaml",
               "--data.init_args.num_videos", "3", "--data.init_args.num_frames", "4",
               "--data.init_args.frames_per_video", "2", "--data.init_args.batch_size", "6")
    chain.ipsb("ipsb demo --train", "--fast", "--tile", "32")
    shutil.copyfile(PHOTOS / "astronaut.jpg", chain.path("photo.jpg"))
    chain.ipsb("ipsb align photo.jpg --out aligned/")
    chain.ipsb("ipsb edit --seed 3 --out edits.png")
    chain.ipsb("ipsb edit --seed 3 --set yaw+=20 --set smile=0.5 --out control.png")
    chain.ipsb("ipsb edit --seed 3 --transfer exp,pose --reference seed:7 --out transfer.png")
    return chain


# ----------------------------------------------------------------------------------------------- stand-in chain
IPSB_SWAPPER = ("--model.init_args.methods+=ipsb.eval.methods.IpsbSwapper "
                "--model.init_args.methods.init_args.backbone lightning_configs/backbone/ffhq1024.yaml "
                "--model.init_args.methods.init_args.mapping_ckpt outputs/ffhq1024/mapping/checkpoints/last.ckpt "
                "--model.init_args.methods.init_args.detail_ckpt outputs/ffhq1024/detail/checkpoints/last.ckpt "
                "--model.init_args.methods.init_args.blend_ckpt outputs/ffhq1024/blend/checkpoints/last.ckpt")
FFPP = "ipsb test --config lightning_configs/eval/ffpp.yaml --data.init_args.root /path/to/FaceForensics++"
CELEBAHQ = ("ipsb test --config lightning_configs/eval/celebahq.yaml --data.init_args.image_root "
            "/path/to/CelebA-HQ/images --data.init_args.pairs_file pairs.txt")
#: the FID feature network of the CelebA-HQ runs (module docstring: the FID Inception file has no stand-in)
FID_STANDIN = json.dumps({"class_path": "ipsb.eval.adapters.CoeffFeatures", "init_args": {"regressor": {
    "class_path": "ipsb.backbone.recon.Deep3DRegressor", "init_args": {"checkpoint": "epoch_20.pth"}}}})


def standin_photos(folder: Path) -> list[Path]:
    """Four real photographs, unaligned: the astronaut and Grace Hopper, each also mirrored."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        out.append(folder / name)
        shutil.copyfile(PHOTOS / name, out[-1])
        out.append(folder / (Path(name).stem + "_mirrored.png"))
        Image.open(PHOTOS / name).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out[-1])
    return sorted(out)


def run_standin_chain(root: Path, checkpoints: Path, sizes: Sizes = FAST, in_process: bool = True) -> Chain:
    """The stand-in chain (module docstring) in ``root`` with ``$IPSB_CHECKPOINTS=checkpoints``."""
    chain = Chain("standin", root, {**WANDB, "IPSB_CHECKPOINTS": str(checkpoints),
                                    "TORCH_HOME": str(Path(root) / "torch_home")}, in_process)
    standin_photos(chain.path("path/to/photos"))
    photo_pair(chain.root)
    tree = ffpp_tree(chain.path("ffpp"), sizes.ffpp_frames)
    images, _, swaps = celebahq_folder(chain.root)

    chain.ipsb("ipsb align path/to/photos --out data/ffhq/images1024x1024 --size 1024")
    chain.ipsb("ipsb predict --config lightning_configs/invert.yaml --data.init_args.root data/ffhq/images1024x1024",
               "--data.init_args.batch_size", "2",
               "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false")
    chain.ipsb("ipsb fit --config lightning_configs/basis.yaml [--trainer.devices 4 --trainer.strategy ddp]",
               *sizes.basis_options, *QUIET)
    chain.ipsb("ipsb fit --config lightning_configs/mapping.yaml [--trainer.devices 4 --trainer.strategy ddp]",
               *stage_options("standin", "mapping", sizes))
    chain.ipsb("ipsb fit --config lightning_configs/detail.yaml", *stage_options("standin", "detail", sizes))
    chain.ipsb("ipsb fit --config lightning_configs/blend.yaml", *stage_options("standin", "blend", sizes))
    chain.ipsb("ipsb swap --source A.jpg --target B.jpg --out C.png --backbone lightning_configs/backbone/ffhq1024.yaml "
               "--mapping outputs/ffhq1024/mapping/checkpoints/last.ckpt "
               "--detail outputs/ffhq1024/detail/checkpoints/last.ckpt "
               "--blend outputs/ffhq1024/blend/checkpoints/last.ckpt")
    ffpp_sizes = ["--data.init_args.frames_per_video", str(sizes.ffpp_frames), "--data.init_args.batch_size", "2",
                  "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false"]
    where = {"/path/to/FaceForensics++": str(tree)}
    chain.ipsb(FFPP, *ffpp_sizes, replace=where)
    shutil.copyfile(chain.path("outputs/eval/ffpp/ffpp_FaceShifter.json"), chain.path("ffpp_dataset_only.json"))
    refusal = chain.ipsb(f"{FFPP} {IPSB_SWAPPER}", *ffpp_sizes, replace=where, expect=2)
    assert "--model.init_args.overwrite true" in refusal and "ffpp_FaceShifter" in refusal, refusal
    assert chain.path("outputs/eval/ffpp/ffpp_FaceShifter.json").read_bytes() == \
        chain.path("ffpp_dataset_only.json").read_bytes()                      # the first table is kept
    chain.ipsb(f"{FFPP} {IPSB_SWAPPER}", *ffpp_sizes, "--model.init_args.overwrite", "true", replace=where)
    celeba_sizes = ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
                    "--model.init_args.fid_batch_size", "2", "--model.init_args.networks.fid", FID_STANDIN,
                    "--trainer.enable_progress_bar", "false"]
    where = {"/path/to/CelebA-HQ/images": str(images), "/path/to/swaps": str(swaps)}
    chain.ipsb(f"{CELEBAHQ} --data.init_args.swaps /path/to/swaps --model.init_args.data_swaps_name MyMethod",
               *celeba_sizes, replace=where)
    shutil.copyfile(chain.path("outputs/eval/celebahq/celebahq.json"), chain.path("celebahq_folder.json"))
    chain.ipsb(f"{CELEBAHQ} --data.init_args.swaps null {IPSB_SWAPPER}", *celeba_sizes,
               "--model.init_args.overwrite", "true", replace=where)
    return chain


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def toy_chain(tmp_path_factory) -> Chain:
    """The fast toy chain, run once per test session (its working directory stays for the session)."""
    return run_toy_chain(tmp_path_factory.mktemp("toy_chain"))


@pytest.fixture(scope="session")
def standin_chain(tmp_path_factory, standin_checkpoints) -> Chain:
    """The fast stand-in chain, run once per test session."""
    return run_standin_chain(tmp_path_factory.mktemp("standin_chain"), standin_checkpoints.folder)


__all__ = ["Chain", "Sizes", "FAST", "FULL", "stage_options", "run_toy_chain", "run_standin_chain", "toy_chain", "standin_chain",
           "strip_optional", "table", "square_face", "drifting", "write_mp4", "ffpp_tree", "celebahq_folder"]
