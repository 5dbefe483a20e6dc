"""The documented chains run through the ``ipsb`` command, as a user types them (``helpers.chains``):

* toy world: toy inversion -> basis -> mapping -> detail -> blend -> ``ipsb swap`` (photo and video)
  with the trained checkpoints -> ``ipsb test`` with ``eval/ffpp_toy.yaml`` and its IpsbSwapper block
  uncommented -> ``ipsb demo --train``;
* stand-in official checkpoints: ``ipsb align`` of real photographs -> ``ipsb predict`` with
  ``invert.yaml`` on the crops -> basis ->
  mapping -> detail -> blend -> ``ipsb swap`` on a real photograph -> ``ipsb test`` with
  ``eval/ffpp.yaml`` (dataset swaps, then with the ipsb swapper) and ``eval/celebahq.yaml``.

The fast variants (steps and sizes shrunk on the command line) run once per session (fixtures
``toy_chain`` / ``standin_chain``, shared with the config build tests); the full variants (more
steps and samples, the basis with its identity metric, ``python -m ipsb`` subprocesses) are slow.
Every documented ``ipsb`` command must be registered to a chain, and each chain must run every
command registered to it. The blend configs also run from another working directory, named by a
relative path into the repository, to the same weights as in the chain's checkout.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.chains import FAST, FULL, REPO, Chain, run_standin_chain, run_toy_chain, stage_options, table
from helpers.documented_commands import COVERED, coverage_gaps, documented_commands, markdown_commands, yaml_comment_commands
from ipsb.checkpoints import sha256_file

STAGES = ("mapping", "detail", "blend")


def ckpt(chain: Chain, world: str, stage: str) -> dict:
    return torch.load(chain.path(f"outputs/{world}/{stage}/checkpoints/last.ckpt"), map_location="cpu",
                      weights_only=True)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def check_photo_swap(chain: Chain, target: str) -> None:
    """C.png is ``target`` (B.jpg or B.png: Grace Hopper, 512x600, face in the upper middle) with its face
    replaced: same size, changed only around the face (the pasted FFHQ crop), the rest of the photo kept."""
    target, out = rgb(chain.path(target)), rgb(chain.path("C.png"))
    assert out.shape == target.shape == (600, 512, 3)
    changed = (np.abs(out - target) > 0).any(-1)
    assert 0.01 < changed.mean() < 0.5, changed.mean()
    assert not changed[420:].any() and not changed[:, :60].any() and not changed[:, -60:].any()
    ys, xs = np.nonzero(changed)
    assert 150 < xs.mean() < 350 and 120 < ys.mean() < 280, (xs.mean(), ys.mean())


def check_stage_checkpoints(chain: Chain, world: str, steps: int) -> dict:
    ckpts = {stage: ckpt(chain, world, stage) for stage in STAGES}
    for stage, c in ckpts.items():
        assert c["global_step"] == steps, stage
        assert c["ipsb_stage"].endswith(stage.capitalize() + "Module")
    assert ckpts["detail"]["hyper_parameters"]["mapping_checkpoint"] == f"outputs/{world}/mapping/checkpoints/last.ckpt"
    assert ckpts["blend"]["hyper_parameters"]["detail_checkpoint"] == f"outputs/{world}/detail/checkpoints/last.ckpt"
    return ckpts


# ----------------------------------------------------------------------------------------------- toy
def check_toy_chain(chain: Chain, steps: int, video_frames: int, invert_photos: int = 4) -> None:
    from ipsb.basis.artifact import Basis
    from ipsb.data.video import count_frames

    assert chain.uncovered() == set()
    codes = torch.load(chain.path("outputs/toy/toy_wplus.pt"), weights_only=True)
    assert codes["wplus"].shape == (invert_photos, 10, 32)
    assert codes["names"] == [f"{i:05d}.png" for i in range(invert_photos)]
    basis = Basis.load(chain.path("outputs/toy/basis.pt"))
    assert basis.groups == {"pose": (0, 6), "exp": (6, 12), "light": (12, 16)}
    assert basis.layer_mask.nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    check_stage_checkpoints(chain, "toy", steps)
    check_photo_swap(chain, "B.png")
    assert count_frames(chain.path("swapped.mp4")) == count_frames(chain.path("clip.mp4")) == video_frames
    rows = table(chain.path("outputs/toy/eval/ffpp_toy.json"))
    assert list(rows) == ["ToyRowSwap (toy FF++ videos)", "copy target", "copy source", "StyleIPSB (ipsb)"]
    assert {r["num_items"] for r in rows.values()} == {6}
    ipsb = rows["StyleIPSB (ipsb)"]
    assert all(np.isfinite(ipsb[k]) for k in ("id_top1_pct", "id_cosine", "exp_l2", "pose_deg"))
    assert ipsb["exp_l2"] != rows["copy target"]["exp_l2"]         # the swapper's own images were measured
    demo = chain.path("outputs/demo")                              # ipsb demo --train: its own stages, grid, table
    assert sorted(p.name for p in (demo / "checkpoints").iterdir()) == ["basis.pt", "blend.ckpt", "detail.ckpt",
                                                                        "mapping.ckpt"]
    assert (demo / "grid.png").is_file() and len(table(demo / "ffpp_toy.json")) == 6
    assert sorted(p.name for p in chain.path("aligned").iterdir()) == ["photo.json", "photo.png"]   # ipsb align
    assert Image.open(chain.path("aligned/photo.png")).size == (256, 256)
    edits = {name: rgb(chain.path(name)) for name in ("edits.png", "control.png", "transfer.png")}     # ipsb edit
    assert all(im.ndim == 3 and min(im.shape[:2]) >= 64 for im in edits.values())
    assert not np.array_equal(edits["control.png"], edits["transfer.png"])


def test_toy_cli_chain(toy_chain):
    print("\n" + toy_chain.report())
    check_toy_chain(toy_chain, steps=3, video_frames=3)


@pytest.mark.slow
def test_toy_cli_chain_full(tmp_path):
    chain = run_toy_chain(tmp_path, FULL, in_process=False)
    print("\n" + chain.report())
    check_toy_chain(chain, FULL.toy_steps, FULL.video_frames)


# ----------------------------------------------------------------------------------------------- stand-in
def check_standin_chain(chain: Chain, standins, steps: int, ffpp_items: int, identity: bool) -> None:
    from ipsb.basis.artifact import Basis

    assert chain.uncovered() == set()
    photos = sorted(p.stem for p in chain.path("path/to/photos").iterdir())
    aligned = chain.path("data/ffhq/images1024x1024")          # ipsb align: a 1024 px crop and a record per photo
    assert sorted(p.name for p in aligned.iterdir()) == sorted([f"{n}.png" for n in photos] + [f"{n}.json" for n in photos])
    assert {Image.open(aligned / f"{n}.png").size for n in photos} == {(1024, 1024)}
    names = [f"{n}.png" for n in photos]
    codes = torch.load(chain.path("outputs/ffhq1024/e4e_ffhq_wplus.pt"), weights_only=True)
    assert codes["names"] == names and codes["wplus"].shape == (len(names), standins.num_ws, standins.w_dim)
    manifest = json.loads(chain.path("outputs/ffhq1024/e4e_ffhq_wplus.manifest.json").read_text())
    assert len(manifest["data"]) == len(names)
    generator_sha = sha256_file(standins.files["stylegan2-ffhq-config-f.pt"])
    basis = Basis.load(chain.path("outputs/ffhq1024/basis.pt"))
    assert basis.layer_mask.nonzero().flatten().tolist() == list(range(3, 10))   # basis.yaml's 3..9
    assert basis.generator_sha256 == generator_sha and basis.config["use_identity"] is identity
    ckpts = check_stage_checkpoints(chain, "ffhq1024", steps)
    for c in ckpts.values():                   # the shipped backbone config, its files found in $IPSB_CHECKPOINTS
        assert c["ipsb_backbone"]["config"]["init_args"]["generator"]["init_args"]["path_or_name"] == \
            "stylegan2-ffhq-config-f.pt"
        assert c["ipsb_backbone"]["file_hashes"]["stylegan2-ffhq-config-f.pt"] == generator_sha
    check_photo_swap(chain, "B.jpg")
    dataset_row = "FaceShifter (dataset videos)"
    first, both = table(chain.path("ffpp_dataset_only.json")), table(chain.path("outputs/eval/ffpp/ffpp_FaceShifter.json"))
    assert list(first) == [dataset_row] and list(both) == [dataset_row, "StyleIPSB (ipsb)"]
    assert {r["num_items"] for r in both.values()} == {ffpp_items} and {r["preset"] for r in both.values()} == {"reliableswap"}
    assert both[dataset_row] == first[dataset_row]                 # the same frames, the same networks
    assert both["StyleIPSB (ipsb)"]["exp_sqrt_mse"] != first[dataset_row]["exp_sqrt_mse"]
    folder, swapper = table(chain.path("celebahq_folder.json")), table(chain.path("outputs/eval/celebahq/celebahq.json"))
    assert list(folder) == ["MyMethod"] and list(swapper) == ["StyleIPSB (ipsb)"]
    for row in (folder["MyMethod"], swapper["StyleIPSB (ipsb)"]):
        assert row["num_items"] == 2 and np.isfinite(row["fid"]) and np.isfinite(row["id_cosine"])


def test_standin_cli_chain(standin_chain, standin_checkpoints):
    print("\n" + standin_chain.report())
    check_standin_chain(standin_chain, standin_checkpoints, steps=2, ffpp_items=4, identity=False)


@pytest.mark.slow
def test_standin_cli_chain_full(tmp_path, standin_checkpoints):
    chain = run_standin_chain(tmp_path, standin_checkpoints.folder, FULL, in_process=False)
    print("\n" + chain.report())
    check_standin_chain(chain, standin_checkpoints, FULL.standin_steps, ffpp_items=2 * FULL.ffpp_frames,
                        identity=True)


# ----------------------------------------------------------------------------------------------- elsewhere
@pytest.mark.parametrize("world", ["toy", "standin"])
def test_blend_config_from_another_working_directory_cli_chain(world, request, tmp_path):
    """``ipsb fit --config <relative path>/blend.yaml`` (``toy/blend.yaml``; ``blend.yaml`` on the stand-ins)
    in a working directory outside the repository, holding the chain's stage-1/2 outputs: the config's
    backbone reference resolves from the repository's config file, and the final weights equal those of
    the same command run in the chain's checkout."""
    chain = request.getfixturevalue(f"{world}_chain")
    out, config = ("toy", "lightning_configs/toy/blend.yaml") if world == "toy" else \
        ("ffhq1024", "lightning_configs/blend.yaml")
    other = Chain(chain.name, tmp_path / "elsewhere" / "work", chain.env, checkout=False)
    shutil.copytree(chain.path(f"outputs/{out}"), other.path(f"outputs/{out}"),     # the outputs, not W&B's logs
                    ignore=lambda d, names: [n for n in names if n == "wandb" or (n == "blend" and Path(d).name == out)])
    relative = os.path.relpath(REPO / config, other.root)
    assert relative.startswith("..") and not other.path("lightning_configs").exists()
    other.ipsb(f"ipsb fit --config {config}", *stage_options(world, "blend", FAST), replace={config: relative})
    here, there = ckpt(chain, out, "blend"), ckpt(other, out, "blend")
    assert here["global_step"] == there["global_step"] == (FAST.toy_steps if world == "toy" else FAST.standin_steps)
    assert set(here["state_dict"]) == set(there["state_dict"])
    for k, v in here["state_dict"].items():
        assert torch.equal(v, there["state_dict"][k]), k


# ----------------------------------------------------------------------------------------------- registry
def test_documented_commands_are_covered_by_a_cli_chain():
    documented = documented_commands()
    missing, stale = coverage_gaps(documented)
    assert not missing, f"documented commands no chain test runs (add them to COVERED and to a chain): {missing}"
    assert not stale, f"registered commands that are no longer documented: {stale}"
    assert set(COVERED.values()) == {"toy", "standin"}
    # the real-weights order is in the config comments: align -> invert -> basis -> stages -> swap -> test
    commands = [d.command for d in documented]
    for start in ("ipsb align ", "ipsb predict --config lightning_configs/invert.yaml",
                  "ipsb fit --config lightning_configs/basis.yaml", "ipsb fit --config lightning_configs/blend.yaml",
                  "ipsb swap --source A.jpg --target B.jpg --out C.png --backbone lightning_configs/backbone/ffhq1024.yaml",
                  "ipsb test --config lightning_configs/eval/ffpp.yaml", "ipsb test --config lightning_configs/eval/celebahq.yaml"):
        assert any(c.startswith(start) for c in commands), start


def test_a_new_documented_command_without_a_test_is_found(tmp_path, monkeypatch):
    """A command added to a config comment or to the README, or a registered one removed from them, fails
    the check."""
    import helpers.documented_commands as dc

    configs = tmp_path / "lightning_configs"
    shutil.copytree(dc.CONFIG_ROOT, configs)
    docs = []
    for doc in dc.DOC_FILES:
        docs.append(tmp_path / doc.relative_to(dc.REPO))
        docs[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(doc, docs[-1])
    monkeypatch.setattr(dc, "DOC_FILES", tuple(docs))
    monkeypatch.setattr(dc, "REPO", tmp_path)
    monkeypatch.setattr(dc, "CONFIG_ROOT", configs)
    assert coverage_gaps(dc.documented_commands()) == ({}, set())
    detail = configs / "detail.yaml"
    detail.write_text(detail.read_text().replace(
        "#   ipsb fit --config lightning_configs/detail.yaml\n",
        "#   ipsb fit --config lightning_configs/detail.yaml --trainer.devices 8\n"))
    invert = configs / "toy" / "invert.yaml"
    toy_invert = "#   ipsb predict --config lightning_configs/toy/invert.yaml --data.init_args.root path/to/toy/photos\n"
    assert toy_invert in invert.read_text()
    invert.write_text(invert.read_text().replace(toy_invert, ""))
    missing, stale = coverage_gaps(dc.documented_commands())
    assert missing == {"ipsb fit --config lightning_configs/detail.yaml --trainer.devices 8":
                       ["lightning_configs/detail.yaml:2"]}
    assert stale == {"ipsb predict --config lightning_configs/toy/invert.yaml --data.init_args.root path/to/toy/photos"}
    (configs / "scaling" / "slurm.sbatch").write_text("# then:\n#   ipsb test --config x.yaml\n")
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text() + "\n```bash\nipsb swap --source me.jpg --target you.jpg --out us.png\n```\n")
    missing = coverage_gaps(dc.documented_commands())[0]
    assert {"ipsb test --config x.yaml", "ipsb swap --source me.jpg --target you.jpg --out us.png"} <= set(missing)


def test_command_extraction_finds_every_form(tmp_path, monkeypatch):
    """Comment lines, continuations, remarks, backticked commands; mentions, patterns and YAML values are not
    commands."""
    config = tmp_path / "lightning_configs" / "x.yaml"
    config.parent.mkdir()
    config.write_text(
        "# Train:\n"
        "#   ipsb fit --config lightning_configs/x.yaml      # writes outputs/x\n"
        "#   ipsb test --config lightning_configs/x.yaml \\\n"
        "#     --data.init_args.root /data   [--trainer.devices 2]\n"
        "# Then `ipsb swap --source A.jpg --target B.jpg --out C.png`; only `ipsb swap` needs e4e.\n"
        "model: {init_args: {name: ipsb fit}}   # ipsb fit --config not/a/comment/line.yaml\n")
    doc = tmp_path / "README.md"
    doc.write_text("Run `ipsb demo --fast`.\n\n```bash\nipsb fit --config a.yaml \\\n  --trainer.max_steps 1\n"
                   "pip install ipsb\nipsb <command> --help\n```\n`ipsb demo`, `ipsb fit --config configs/....yaml`, "
                   "`ipsb swap: error: ...`\n")
    monkeypatch.setattr("helpers.documented_commands.REPO", tmp_path)
    assert [d.command for d in yaml_comment_commands(config)] == [
        "ipsb fit --config lightning_configs/x.yaml",
        "ipsb test --config lightning_configs/x.yaml --data.init_args.root /data [--trainer.devices 2]",
        "ipsb swap --source A.jpg --target B.jpg --out C.png"]
    assert [d.command for d in markdown_commands(doc)] == [
        "ipsb demo --fast", "ipsb fit --config a.yaml --trainer.max_steps 1"]
    assert [d.where for d in yaml_comment_commands(config)] == ["lightning_configs/x.yaml:2",
                                                                "lightning_configs/x.yaml:3",
                                                                "lightning_configs/x.yaml:5"]

