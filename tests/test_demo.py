"""``ipsb demo``: the grid layout and its column titles, the CLI registration, overwrite refusal, the default
run on the shipped stages (with the acceptance numbers), ``--train --fast`` and ``--train --until``."""
import json

import pytest
import torch
import yaml

from ipsb.assets import config_path, toy_stage_path
from ipsb.cli import EXTRA_COMMANDS
from ipsb.cli import main as ipsb_main
from ipsb.demo import (FFPP_SEED, GRID_SEEDS, IPSB_ROWS, MANIPULATION_ROW, NO_SWAP_ROW, TARGET_ROW, TOY_NOTE,
                       build_swapper, labelled_grid, main, run_demo, title_height, to_uint8_grid)

ROWS = [MANIPULATION_ROW, NO_SWAP_ROW, TARGET_ROW, *IPSB_ROWS.values()]
QUIET = dict(log=lambda *_: None)


def test_demo_grid_has_five_columns_per_row():
    g = torch.Generator().manual_seed(0)
    rows = [[torch.rand(3, 16, 16, generator=g) * 2 - 1 for _ in range(5)] for _ in range(3)]
    grid = to_uint8_grid(rows, tile=32, padding=4)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 3 * 32 + 4 * 4, 5 * 32 + 6 * 4)
    # the tile of row 1, column 2 is that image, upsampled (nearest) and mapped to [0,255]
    tile = grid[:, 4 + 36: 4 + 36 + 32, 4 + 2 * 36: 4 + 2 * 36 + 32].float()
    want = ((torch.nn.functional.interpolate(rows[1][2][None], size=(32, 32), mode="nearest")[0] + 1) / 2 * 255)
    assert (tile - want).abs().max() <= 0.5 + 1e-3


def test_demo_grid_titles_are_drawn_above_their_columns():
    import numpy as np

    rows = [[torch.full((3, 8, 8), 1.0) for _ in range(3)]]          # white tiles: only the titles are dark
    img = np.asarray(labelled_grid(rows, ["source", "target", ""], tile=64, padding=4))
    band = title_height(64)
    assert img.shape == (band + 64 + 8, 3 * 64 + 4 * 4, 3)
    assert (img[band:] == 255).all()                                  # the grid itself is unchanged
    dark = img[:band].min(axis=2) < 128
    columns = [dark[:, 4 + i * 68: 4 + i * 68 + 64].sum() for i in range(3)]
    assert columns[0] > 20 and columns[1] > 20 and columns[2] == 0     # each title sits over its own column
    with pytest.raises(ValueError, match="titles"):
        labelled_grid(rows, ["a", "b"], tile=64, padding=4)


def test_demo_is_registered_and_refuses_to_overwrite(tmp_path, capsys):
    assert EXTRA_COMMANDS["demo"][0] == "ipsb.demo:main"
    (tmp_path / "grid.png").write_bytes(b"previous result")
    assert ipsb_main(["demo", "--out", str(tmp_path), "--fast"]) == 2              # refused before any work
    assert ipsb_main(["demo", "--out", str(tmp_path), "--fast", "--train"]) == 2   # refused before any training
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "grid.png").read_bytes() == b"previous result"
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "ffpp").exists()
    (tmp_path / "grid.png").unlink()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mapping.ckpt").write_bytes(b"an earlier stage 1")
    assert ipsb_main(["demo", "--out", str(tmp_path), "--fast", "--train", "--until", "mapping"]) == 2
    assert (tmp_path / "checkpoints" / "mapping.ckpt").read_bytes() == b"an earlier stage 1"
    assert not (tmp_path / "checkpoints" / "basis.pt").exists()
    with pytest.raises(SystemExit):                                   # the shipped stages are all trained
        main(["--out", str(tmp_path / "x"), "--until", "mapping"])
    assert "--until needs --train" in capsys.readouterr().err


def test_demo_pairs_are_held_out_from_every_stage():
    """The grid's and the table's seeds are none of the seeds the stage configs sample from."""
    used = set()
    for stage in ("basis", "mapping", "detail", "blend"):
        cfg = yaml.safe_load(config_path(f"toy/{stage}.yaml").read_text())
        used |= {v for k, v in {**cfg["model"]["init_args"], **cfg["data"]["init_args"]}.items()
                 if k in ("seed", "val_seed")}
        used.add(cfg["seed_everything"])
    assert used and not used & {FFPP_SEED, *GRID_SEEDS}


def test_demo_on_the_shipped_stages_meets_the_acceptance(tmp_path, capsys):
    """``ipsb demo`` (shipped stages, full size): the final row lowers expression and pose error by >= 50%
    against "no swap", with ID retrieval top-1 >= 90% and ID cosine >= 0.8, on held-out pairs."""
    from PIL import Image

    assert main(["--out", str(tmp_path / "demo"), "--tile", "32"]) == 0
    printed = capsys.readouterr().out
    assert TOY_NOTE in printed and "vs no swap" in printed
    w, h = Image.open(tmp_path / "demo" / "grid.png").size
    assert w == 5 * 32 + 6 * 4 and h == title_height(32) + 6 * 32 + 7 * 4     # FULL: 6 held-out pairs
    table = json.loads((tmp_path / "demo" / "ffpp_toy.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == ROWS and TOY_NOTE in table["notes"]
    assert table["manifest"]["counts"]["pairs"] == 8 and rows[NO_SWAP_ROW]["num_items"] == 32
    assert TOY_NOTE in (tmp_path / "demo" / "ffpp_toy.md").read_text()
    base, final = rows[NO_SWAP_ROW], rows[IPSB_ROWS["final"]]
    assert final["exp_l2"] <= 0.5 * base["exp_l2"], (final, base)
    assert final["pose_deg"] <= 0.5 * base["pose_deg"], (final, base)
    assert final["id_top1_pct"] >= 90.0 and final["id_cosine"] >= 0.8, final
    # the reference rows bound it: the target has zero attribute error and not the source's identity
    assert rows[TARGET_ROW]["exp_l2"] == 0 and rows[TARGET_ROW]["pose_deg"] == 0
    assert rows[TARGET_ROW]["id_cosine"] < final["id_cosine"]


def test_demo_stage_one_alone_swaps_with_stage_one_only():
    """``--train --until mapping`` swaps with stage 1 alone: the stage-2 code is the stage-1 code."""
    from ipsb.backbone.bundle import FaceBackbone
    from ipsb.swap import swap_pairs

    backbone = FaceBackbone.from_config(config_path("backbone/toy.yaml"))
    swapper = build_swapper(backbone, {"basis": toy_stage_path("basis"), "mapping": toy_stage_path("mapping")})
    assert swapper.msft is None
    w = backbone.sample_wplus(4, seed=GRID_SEEDS[0], truncation_psi=0.7)
    out = swapper.swap_aligned(None, None, w_source=w[:2], w_target=w[2:])
    assert torch.equal(out.w_stage1, out.w_stage2) and not torch.equal(out.w_stage1, out.w_source)
    images = swap_pairs(swapper, w[:2], w[2:])
    assert torch.equal(images["stage1"], images["final"])


def test_demo_train_fast_writes_grid_table_and_checkpoints(tmp_path):
    """``ipsb demo --train --fast``: trains every stage briefly, then the same grid and table."""
    from PIL import Image

    from ipsb.checkpoints import read_stage_checkpoint
    from ipsb.stages.blend_module import BlendModule

    res = run_demo(tmp_path / "demo", fast=True, train=True, tile=32, padding=2, **QUIET)
    w, h = Image.open(res["grid"]).size
    assert w == 5 * 32 + 6 * 2 and h == title_height(32) + 2 * 32 + 3 * 2    # FAST: 2 held-out pairs
    table = json.loads(res["table_json"].read_text())
    assert [r["method"] for r in table["rows"]] == ROWS
    assert res["table_md"].is_file() and all(p.is_file() for p in res["checkpoints"].values())
    assert set(res["checkpoints"]) == {"basis", "mapping", "detail", "blend"}
    assert read_stage_checkpoint(res["checkpoints"]["blend"], BlendModule)["global_step"] == 2
    with pytest.raises(FileExistsError):
        run_demo(tmp_path / "demo", fast=True, train=True, **QUIET)
    with pytest.raises(FileExistsError):
        run_demo(tmp_path / "demo", fast=True, **QUIET)


@pytest.mark.slow   # a second brief training run
def test_demo_train_until_mapping_stops_after_stage_one(tmp_path):
    from PIL import Image

    res = run_demo(tmp_path / "demo", fast=True, train=True, until="mapping", tile=32, padding=2, **QUIET)
    assert sorted(p.name for p in (tmp_path / "demo" / "checkpoints").iterdir()) == ["basis.pt", "mapping.ckpt"]
    assert Image.open(res["grid"]).size[0] == 3 * 32 + 4 * 2                 # source | target | stage 1
    table = json.loads(res["table_json"].read_text())
    assert [r["method"] for r in table["rows"]] == [MANIPULATION_ROW, NO_SWAP_ROW, TARGET_ROW, IPSB_ROWS["stage1"]]
    res = run_demo(tmp_path / "basis_only", fast=True, train=True, until="basis", **QUIET)
    assert res["grid"] is None and list(res["checkpoints"]) == ["basis"] and res["checkpoints"]["basis"].is_file()
