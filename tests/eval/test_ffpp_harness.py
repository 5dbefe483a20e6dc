"""The FF++ harness on a toy FF++ tree: rows, bounds, table files, provenance, overwrite refusal."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness_helpers import quiet_trainer, toy_networks
from ipsb.checkpoints import sha256_file
from ipsb.eval.evaluator import EvaluationModule
from ipsb.eval.methods import CopySource, CopyTarget, SwapMethod
from ipsb.eval.networks import MetricNetworks
from ipsb.eval.table import PAPER_ROWS
from ipsb.data.toy_ffpp import MARKER, TOY_METHOD, ToyFFPPDataModule, build_toy_ffpp, toy_pairs

N_VIDEOS, N_FRAMES, SLOTS = 3, 6, 3


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_toy_ffpp(tmp_path_factory.mktemp("toyffpp") / "ffpp", N_VIDEOS, N_FRAMES, seed=0)


@pytest.fixture(scope="module")
def nets():
    return MetricNetworks.from_config(toy_networks())


def datamodule(tree, tmp_path, **kw):
    return ToyFFPPDataModule(root=str(tree), num_videos=N_VIDEOS, num_frames=N_FRAMES, frames_per_video=SLOTS,
                             manifest_path=str(tmp_path / "manifest.json"), batch_size=4, **kw)


def run(module, dm):
    quiet_trainer().test(module, datamodule=dm, verbose=False)
    return {r["method"]: r for r in module.results}


def test_toy_tree_layout_and_reuse(tree):
    names = sorted(p.name for p in (tree / "original_sequences/youtube/c23/videos").glob("*.mp4"))
    assert names == ["000.mp4", "001.mp4", "002.mp4"]
    swaps = sorted(p.name for p in (tree / f"manipulated_sequences/{TOY_METHOD}/c23/videos").glob("*.mp4"))
    assert swaps == [f"{t:03d}_{s:03d}.mp4" for t, s in toy_pairs(N_VIDEOS)]
    stamp = (tree / MARKER).stat().st_mtime_ns
    build_toy_ffpp(tree, N_VIDEOS, N_FRAMES, seed=0)                   # same settings: reused as is
    assert (tree / MARKER).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="built with"):
        build_toy_ffpp(tree, N_VIDEOS, N_FRAMES + 1, seed=0)            # other settings: refused


def test_ffpp_harness_rows_bounds_and_table(tree, nets, tmp_path):
    out = tmp_path / "tables"
    module = EvaluationModule(nets, "ffpp", methods=[CopyTarget(), CopySource()], output_dir=str(out),
                              table_name="t")
    rows = run(module, datamodule(tree, tmp_path))
    assert list(rows) == [f"{TOY_METHOD} (dataset videos)", "copy target", "copy source"]
    n = N_VIDEOS * SLOTS
    assert all(r["num_items"] == n for r in rows.values())
    tgt, src, toy = rows["copy target"], rows["copy source"], rows[f"{TOY_METHOD} (dataset videos)"]
    assert tgt["exp_l2"] == pytest.approx(0, abs=1e-6) and tgt["pose_deg"] == pytest.approx(0, abs=1e-5)
    assert src["id_top1_pct"] == 100.0 and src["id_cosine"] == pytest.approx(1.0, abs=1e-5)
    # the target is another video of the gallery: a copy of it is never retrieved as the source at top-1
    assert tgt["id_top1_pct"] == 0.0
    # the toy manipulation keeps the target's pose rows: far closer in pose than a copy of the source
    assert toy["pose_deg"] < 0.6 * src["pose_deg"]
    assert toy["pose_bin_sqrt_mse"] is None                           # toy pose: degrees only
    md, js = module.table_files()
    table = json.loads(js.read_text())
    assert [r["method"] for r in table["rows"]] == list(rows)
    assert [r["method"] for r in table["reference_rows"]] == [r["method"] for r in PAPER_ROWS["ffpp"]]
    assert all(r["source"] == "paper" for r in table["reference_rows"])
    assert table["networks"]["files"]["identity"] == {"identity.pt": sha256_file(nets.identity.checkpoint_path)}
    dm_manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert table["manifest"]["list_sha256"] == dm_manifest["list_sha256"]
    assert table["manifest"]["sha256"] == sha256_file(tmp_path / "manifest.json")
    text = md.read_text()
    assert "| copy source | measured | 100.00 | 100.00 |" in text and "| StyleIPSB | paper | 95.05 |" in text
    # a second run refuses to overwrite, before doing any work; overwrite=True replaces the table
    again = EvaluationModule(nets, "ffpp", methods=[CopyTarget()], output_dir=str(out), table_name="t")
    with pytest.raises(FileExistsError, match="overwrite"):
        run(again, datamodule(tree, tmp_path))
    assert json.loads(js.read_text()) == table
    again = EvaluationModule(nets, "ffpp", methods=[CopyTarget()], output_dir=str(out), table_name="t",
                             overwrite=True)
    run(again, datamodule(tree, tmp_path, swaps=None))
    assert [r["method"] for r in json.loads(js.read_text())["rows"]] == ["copy target"]


def test_ffpp_precomputed_swap_folder_equals_method(tree, nets, tmp_path):
    """(b) a folder of precomputed swaps: here the aligned targets, so it must equal CopyTarget exactly."""
    dm = datamodule(tree, tmp_path, swaps=None)
    folder = tmp_path / "swaps"
    for it in dm.pairs_dataset():
        d = folder / f"{it['target_name']}_{it['source_name']}"
        d.mkdir(parents=True, exist_ok=True)
        px = ((it["target"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(px)).save(d / f"frame_{it['target_frame']:04d}.png")
    module = EvaluationModule(nets, "ffpp", methods=[CopyTarget()], data_swaps_name="folder",
                              output_dir=str(tmp_path / "tables"))
    rows = run(module, datamodule(tree, tmp_path, swaps=str(folder)))
    for key in ("id_top1_pct", "id_top5_pct", "id_cosine", "exp_l2", "pose_deg"):
        assert rows["folder"][key] == pytest.approx(rows["copy target"][key], abs=1e-4), key


class _WrongSize(SwapMethod):
    def forward(self, source, target):
        return target[..., :-1]


def test_ffpp_harness_errors(tree, nets, tmp_path):
    with pytest.raises(ValueError, match="nothing to evaluate"):
        run(EvaluationModule(nets, "ffpp", output_dir=str(tmp_path)), datamodule(tree, tmp_path, swaps=None))
    with pytest.raises(ValueError, match="returned"):
        run(EvaluationModule(nets, "ffpp", methods=[_WrongSize("bad")], output_dir=str(tmp_path)),
            datamodule(tree, tmp_path, swaps=None))
    with pytest.raises(ValueError, match="unique"):
        EvaluationModule(nets, "ffpp", methods=[CopyTarget(), CopyTarget()])
    with pytest.raises(ValueError, match="benchmark"):
        EvaluationModule(nets, "lfw")
    with pytest.raises(ValueError, match="fid"):
        EvaluationModule(nets, "celebahq", methods=[CopyTarget()])


def test_metric_networks_config_checks_and_hopenet_logits(tree, tmp_path):
    with pytest.raises(ValueError, match="unknown metric network"):
        MetricNetworks.from_config({**toy_networks(), "bogus": {"class_path": "torch.nn.Identity"}})
    with pytest.raises(ValueError, match="'identity'"):
        MetricNetworks.from_config({"regressor": toy_networks()["regressor"]})
    # a pose network with HopeNet's 66-bin logits interface gives both pose forms
    spec = {**toy_networks(), "pose": {"class_path": "harness_helpers.TinyBinPose"}}
    nets = MetricNetworks.from_config(spec)
    assert nets.pose_has_logits and nets.expression_slice == (8, 14)
    module = EvaluationModule(nets, "ffpp", methods=[CopyTarget(), CopySource()], output_dir=str(tmp_path))
    rows = run(module, datamodule(tree, tmp_path, swaps=None))
    row = rows["copy target"]
    assert row["pose_deg"] == pytest.approx(0, abs=1e-4) and row["pose_bin_sqrt_mse"] == pytest.approx(0, abs=1e-6)
    assert rows["copy source"]["pose_bin_sqrt_mse"] > 0
    assert json.loads((tmp_path / "ffpp.json").read_text())["networks"]["pose_form"] == "logits"
