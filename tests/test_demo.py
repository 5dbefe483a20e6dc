"""``ipsb demo``: the grid layout, the CLI registration, overwrite refusal, and (slow) a reduced full run."""
import json

import pytest
import torch

from ipsb.cli import EXTRA_COMMANDS
from ipsb.cli import main as ipsb_main
from ipsb.demo import run_demo, to_uint8_grid


def test_demo_grid_has_five_columns_per_row():
    g = torch.Generator().manual_seed(0)
    rows = [[torch.rand(3, 16, 16, generator=g) * 2 - 1 for _ in range(5)] for _ in range(3)]
    grid = to_uint8_grid(rows, tile=32, padding=4)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 3 * 32 + 4 * 4, 5 * 32 + 6 * 4)
    # the tile of row 1, column 2 is that image, upsampled (nearest) and mapped to [0,255]
    tile = grid[:, 4 + 36: 4 + 36 + 32, 4 + 2 * 36: 4 + 2 * 36 + 32].float()
    want = ((torch.nn.functional.interpolate(rows[1][2][None], size=(32, 32), mode="nearest")[0] + 1) / 2 * 255)
    assert (tile - want).abs().max() <= 0.5 + 1e-3


def test_demo_is_registered_and_refuses_to_overwrite(tmp_path, capsys):
    assert EXTRA_COMMANDS["demo"][0] == "ipsb.demo:main"
    (tmp_path / "grid.png").write_bytes(b"previous result")
    assert ipsb_main(["demo", "--out", str(tmp_path), "--fast"]) == 2          # refused before any training
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "grid.png").read_bytes() == b"previous result"
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow   # trains all four stages briefly: ~1.5 min of CPU
def test_demo_fast_run_writes_grid_and_table(tmp_path):
    from PIL import Image

    res = run_demo(tmp_path / "demo", fast=True, tile=32, padding=2, log=lambda *_: None)
    w, h = Image.open(res["grid"]).size
    assert w == 5 * 32 + 6 * 2 and h == 2 * 32 + 3 * 2                 # FAST: 2 held-out pairs
    table = json.loads(res["table_json"].read_text())
    assert [r["method"] for r in table["rows"]] == ["ToyRowSwap (toy FF++ videos)", "StyleIPSB (ipsb, toy)"]
    assert res["table_md"].is_file() and all(p.is_file() for p in res["checkpoints"].values())
    with pytest.raises(FileExistsError):
        run_demo(tmp_path / "demo", fast=True, log=lambda *_: None)
