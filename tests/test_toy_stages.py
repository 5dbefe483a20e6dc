"""The trained toy stages shipped in ``ipsb/assets/toy/stages/``: they are what the stage configs describe
(backbone files, hyper-parameters, step counts), small, recorded by sha256, loadable from anywhere; and
their retrain command (``python -m ipsb.training.toy_stages``) runs as typed."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ipsb.assets import ASSETS, TOY_STAGE_FILES, TOY_STAGES, config_path, toy_stage_path
from ipsb.checkpoints import MissingCheckpointError, sha256_file
from ipsb.training.toy_stages import RECIPE, install, main

REPO = Path(__file__).resolve().parent.parent
MAX_STAGE_BYTES = 1 << 20   # the stage checkpoints hold small nets only; the toy backbone's files are ~2 MB


def _plain(x):
    """Tuples as lists, so YAML values and stored hyper-parameters compare."""
    return json.loads(json.dumps(x))


def _within(want, have) -> bool:
    """``want`` (as written in a config) is ``have`` (as stored), where ``have`` may also fill in defaults."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _within(v, have[k]) for k, v in want.items())
    return _plain(want) == _plain(have)


def _config(stage: str) -> dict:
    return yaml.safe_load(config_path(f"toy/{stage}.yaml").read_text())


def test_toy_stage_paths_name_the_shipped_files():
    assert [toy_stage_path(s).name for s in ("basis", "mapping", "detail", "blend")] == \
        ["basis.pt", "mapping.ckpt", "detail.ckpt", "blend.ckpt"]
    assert all(toy_stage_path(s).is_file() for s in TOY_STAGE_FILES)
    with pytest.raises(ValueError, match="mapping, detail, blend"):
        toy_stage_path("stage1")
    assert config_path("toy/mapping.yaml").is_file()
    with pytest.raises(FileNotFoundError, match="no config"):
        config_path("toy/nothing.yaml")


def test_shipped_stage_files_are_recorded_by_sha256():
    readme = (TOY_STAGES / "README.md").read_text()
    for name in TOY_STAGE_FILES.values():
        found = re.search(rf"\| `{re.escape(name)}` \|[^\n]*`([0-9a-f]{{64}})`", readme)
        assert found, f"{name} has no sha256 row in the stages README"
        assert found.group(1) == sha256_file(TOY_STAGES / name), name


@pytest.mark.parametrize("stage", ["mapping", "detail", "blend"])
def test_shipped_stage_is_what_its_config_describes(stage):
    ckpt = torch.load(toy_stage_path(stage), map_location="cpu", weights_only=True)
    cfg = _config(stage)
    hp = ckpt["hyper_parameters"]
    assert hp["_class_path"] == cfg["model"]["class_path"] == ckpt["ipsb_stage"]
    (moved, value), _ = RECIPE[stage]
    assert hp[moved] == value                                    # the one path the recipe moves
    for key, want in cfg["model"]["init_args"].items():
        if key == moved:
            continue
        if key == "backbone":     # the toy backbone config (stored with every component's defaults filled in)
            toy = yaml.safe_load(config_path("backbone/toy.yaml").read_text())
            assert _within(toy, hp["backbone"])
            assert all(v is None for k, v in hp["backbone"]["init_args"].items() if k not in toy["init_args"])
        else:                     # the optimizer also with its defaults filled in
            assert _within(want, hp[key]), key
    assert ckpt["global_step"] == cfg["trainer"]["max_steps"]     # trained for the config's whole run
    # the backbone files it was trained with are the shipped toy networks
    hashes = ckpt["ipsb_backbone"]["file_hashes"]
    assert hashes and all(sha256_file(ASSETS / "toy" / name) == digest for name, digest in hashes.items())
    assert not [k for k in ckpt["state_dict"] if k.startswith("backbone.")]   # frozen backbone never saved
    assert toy_stage_path(stage).stat().st_size < MAX_STAGE_BYTES


def test_shipped_basis_is_what_its_config_describes():
    from ipsb.basis.artifact import Basis

    basis = torch.load(toy_stage_path("basis"), map_location="cpu", weights_only=True)
    cfg = _config("basis")
    margs = cfg["model"]["init_args"]
    recorded = basis["config"]
    assert {"layers", "groups", "k", "delta", "relative_delta", "use_identity", "truncation_psi", "seed"} <= set(recorded)
    assert all(_within(margs[k], recorded[k]) for k in margs if k in recorded)   # every setting it records
    assert basis["config"]["num_samples"] == cfg["data"]["init_args"]["num_samples"]
    assert Basis.load(toy_stage_path("basis")).V.shape[1] == sum(margs["k"].values())


def test_shipped_stages_load_from_any_folder_and_name_a_missing_input(tmp_path, monkeypatch):
    """The checkpoints name each other by file name: found next to them, wherever the folder is."""
    from ipsb.backbone.bundle import FaceBackbone
    from ipsb.swap import FaceSwapper

    moved = tmp_path / "moved"
    shutil.copytree(TOY_STAGES, moved)
    monkeypatch.chdir(tmp_path)                      # not the folder of the checkpoints
    backbone = FaceBackbone.from_config(config_path("backbone/toy.yaml"))
    swapper = FaceSwapper.from_checkpoints(str(moved / "mapping.ckpt"), str(moved / "detail.ckpt"),
                                           str(moved / "blend.ckpt"), backbone)
    shipped = torch.load(toy_stage_path("blend"), map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(swapper.msft.heads["64"].weight, shipped["msft.heads.64.weight"])
    (moved / "basis.pt").unlink()
    with pytest.raises(MissingCheckpointError, match="basis.pt"):
        FaceSwapper.from_checkpoints(str(moved / "mapping.ckpt"), str(moved / "detail.ckpt"), None, backbone)


def test_retrain_command_refuses_a_folder_with_results(tmp_path, capsys):
    (tmp_path / "mapping.ckpt").write_bytes(b"earlier")
    assert main(["--out", str(tmp_path)]) == 1
    assert "mapping.ckpt" in capsys.readouterr().err
    assert (tmp_path / "mapping.ckpt").read_bytes() == b"earlier" and not (tmp_path / "outputs").exists()


@pytest.mark.slow   # four `ipsb fit` processes (about a minute on two cores)
def test_retrain_command_runs_as_typed_with_tiny_step_counts(tmp_path):
    """``python -m ipsb.training.toy_stages --out DIR`` with 2 steps per stage: four files that name each
    other by file name, a record of their hashes; the shipped stages untouched without --overwrite."""
    before = {n: sha256_file(TOY_STAGES / n) for n in TOY_STAGE_FILES.values()}
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ipsb.training.toy_stages", "--out", str(out), "--max-steps", "2",
                           "--basis-samples", "2"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unchanged (pass --overwrite" in proc.stdout
    record = json.loads((out / "toy_stages.json").read_text())
    for stage, name in TOY_STAGE_FILES.items():
        assert record["stages"][stage]["sha256"] == sha256_file(out / name)
    hp = torch.load(out / "blend.ckpt", map_location="cpu", weights_only=True)
    assert hp["global_step"] == 2 and hp["hyper_parameters"]["detail_checkpoint"] == "detail.ckpt"
    assert {n: sha256_file(TOY_STAGES / n) for n in TOY_STAGE_FILES.values()} == before
    dest = tmp_path / "installed"
    install(out, dest, log=lambda *_: None)                        # what --overwrite does, into a copy
    assert {p.name for p in dest.iterdir()} == set(TOY_STAGE_FILES.values())
    assert sha256_file(dest / "blend.ckpt") == record["stages"]["blend"]["sha256"]


def test_ipsb_swap_defaults_to_the_shipped_stages(tmp_path):
    """``ipsb swap --source A --target B --out C`` with no stage options swaps with the shipped toy stages."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from ipsb.cli import main as ipsb_main
    from ipsb.swap_cli import build_parser

    args = build_parser().parse_args(["--source", "a", "--target", "b", "--out", "c"])
    assert (args.mapping, args.detail, args.blend) == tuple(str(toy_stage_path(s)) for s in ("mapping", "detail",
                                                                                              "blend"))
    assert args.backbone == str(config_path("backbone/toy.yaml"))
    target = data.astronaut()
    Image.fromarray(target).save(tmp_path / "target.png")
    Image.fromarray(np.ascontiguousarray(target[:, ::-1])).save(tmp_path / "source.png")
    assert ipsb_main(["swap", "--source", str(tmp_path / "source.png"), "--target", str(tmp_path / "target.png"),
                      "--out", str(tmp_path / "out.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == target.shape and 200 < (out != target).any(-1).sum() < 0.25 * out.shape[0] * out.shape[1]
