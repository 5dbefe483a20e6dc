"""Metric presets: config semantics (preset, replacement, init_args overrides, errors), the formulas
each preset applies in the harness on the toy FF++ tree, the results table's preset column, and the
files the FF++ config needs."""
import json
from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from harness_helpers import quiet_trainer, toy_networks
from ipsb.checkpoints import MissingCheckpointError
from ipsb.eval.evaluator import EvaluationModule
from ipsb.eval.methods import CopySource, CopyTarget
from ipsb.eval.networks import PRESETS, MetricNetworks, preset_specs
from ipsb.eval.table import PAPER_ROWS
from ipsb.data.toy_ffpp import ToyFFPPDataModule, build_toy_ffpp

CONFIGS = Path(__file__).resolve().parent.parent.parent / "lightning_configs" / "eval"
N_VIDEOS, N_FRAMES, SLOTS = 3, 6, 3
BIN_POSE = {"class_path": "harness_helpers.TinyBinPose"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_toy_ffpp(tmp_path_factory.mktemp("toyffpp") / "ffpp", N_VIDEOS, N_FRAMES, seed=0)


def run(nets, tree, tmp_path, methods=(CopyTarget(), CopySource()), slots=SLOTS):
    module = EvaluationModule(nets, "ffpp", methods=list(methods), output_dir=str(tmp_path), table_name="t")
    dm = ToyFFPPDataModule(root=str(tree), num_videos=N_VIDEOS, num_frames=N_FRAMES, frames_per_video=slots,
                           manifest_path=str(tmp_path / "manifest.json"), swaps=None, batch_size=4)
    quiet_trainer().test(module, datamodule=dm, verbose=False)
    return {r["method"]: r for r in module.results}, dm, module


def test_preset_specs_merge_replace_and_errors():
    preset, specs, replaced = preset_specs({"preset": "reliableswap",
                                            "regressor": {"init_args": {"landmarks_file": "p.json"}},
                                            "pose": BIN_POSE})
    assert preset is PRESETS["reliableswap"] and replaced == ["pose"] and specs["pose"] == BIN_POSE
    reg = specs["regressor"]["init_args"]
    assert reg["landmarks_file"] == "p.json" and reg["to_uint8"] == "truncate" and reg["checkpoint"] == "epoch_20.pth"
    assert "landmarks_file" not in PRESETS["reliableswap"].networks["regressor"]["init_args"]   # not mutated
    assert specs["identity"]["init_args"] == {"checkpoint": "net_sphere20_data_vggface2_acc_9955.pth",
                                             "crop": "resize", "mirror": False}
    _, clean, _ = preset_specs({"preset": "clean"})
    assert clean["identity"]["init_args"]["mirror"] is True and clean["regressor"]["init_args"]["to_uint8"] == "round"
    assert clean["pose"]["init_args"]["preprocessing"] == "imagenet224"
    with pytest.raises(ValueError, match="unknown metric preset 'reliable'.*clean.*reliableswap"):
        preset_specs({"preset": "reliable"})
    with pytest.raises(ValueError, match="no preset is set"):
        preset_specs({"regressor": {"init_args": {"checkpoint": "x"}}})
    with pytest.raises(ValueError, match="class_path, init_args"):
        preset_specs({"preset": "clean", "pose": "hopenet"})


def test_reliableswap_needs_bin_logits_and_ffpp():
    with pytest.raises(ValueError, match="66-bin logits"):
        MetricNetworks.from_config({**toy_networks(), "preset": "reliableswap"})
    nets = MetricNetworks.from_config({**toy_networks(), "pose": BIN_POSE, "preset": "reliableswap"})
    assert nets.replaced == ("identity", "regressor", "pose")
    with pytest.raises(ValueError, match="applies to \\['ffpp'\\], not to the 'celebahq'"):
        EvaluationModule(nets, "celebahq", methods=[CopyTarget()])


def test_clean_formulas_with_toy_networks(tree, tmp_path):
    nets = MetricNetworks.from_config({**toy_networks(), "preset": "clean"})
    rows, dm, module = run(nets, tree, tmp_path)
    custom, _, _ = run(MetricNetworks.from_config(toy_networks()), tree, tmp_path / "custom")
    assert dm.gallery_loader is True
    for name, row in rows.items():
        assert row["preset"] == "clean" and custom[name]["preset"] == "custom"
        for key in ("id_top1_pct", "id_top5_pct", "id_cosine", "exp_l2", "pose_deg"):
            assert row[key] == pytest.approx(custom[name][key], abs=1e-6), key
        assert row["exp_sqrt_mse"] is None and row["pose_bin_sqrt_mse"] is None
        assert custom[name]["exp_sqrt_mse"] is not None
    md = module.table_files()[0].read_text()
    assert "| copy source | measured | 100.00 | 100.00 |" in md and "| clean | 9 |" in md
    assert "Preset `clean`" in md and "Networks replaced by the config: identity, regressor, pose." in md


def test_reliableswap_formulas_on_the_toy_tree(tree, tmp_path):
    """Item-source gallery labelled by target video, cosine over the first N // 10 items, raw-logit pose."""
    nets = MetricNetworks.from_config({**toy_networks(), "pose": BIN_POSE, "preset": "reliableswap"})
    rows, dm, module = run(nets, tree, tmp_path, slots=N_FRAMES)            # 3 videos x 6 frames = 18 items
    custom, _, _ = run(MetricNetworks.from_config({**toy_networks(), "pose": BIN_POSE}), tree, tmp_path / "c",
                       slots=N_FRAMES)
    assert dm.gallery_loader is False
    src, tgt = rows["copy source"], rows["copy target"]
    assert src["num_items"] == 18 and src["preset"] == "reliableswap"
    assert src["id_top1_pct"] == 100.0 and src["id_cosine"] == pytest.approx(1.0, abs=1e-5)
    # the printed cosine averages the first 18 // 10 = 1 item only
    item = dm.pairs_dataset()[0]
    first = (nets.embed(item["target"][None]) * nets.embed(item["source"][None])).sum().item()
    assert tgt["id_cosine"] == pytest.approx(first, abs=1e-5)
    assert tgt["id_cosine"] != pytest.approx(custom["copy target"]["id_cosine"], abs=1e-3)
    assert tgt["pose_logit_l2"] == pytest.approx(0, abs=1e-6) and src["pose_logit_l2"] > 0
    assert src["pose_logit_l2"] == pytest.approx(custom["copy source"]["pose_logit_l2"], rel=1e-6)
    assert src["exp_sqrt_mse"] == pytest.approx(custom["copy source"]["exp_sqrt_mse"], rel=1e-6)
    assert all(src[k] is None for k in ("id_top5_pct", "exp_l2", "pose_deg", "pose_bin_sqrt_mse"))
    table = json.loads(module.table_files()[1].read_text())
    assert table["networks"]["preset"]["name"] == "reliableswap"
    assert all(r["comparable_preset"] == "reliableswap" for r in table["reference_rows"])
    assert "| copy source | measured | 100.00 | - | 1.0000 |" in module.table_files()[0].read_text()


def test_paper_rows_sit_under_the_reliableswap_columns():
    for row in PAPER_ROWS["ffpp"]:
        assert set(row) - {"method", "source", "comparable_preset"} == {"id_top1_pct", "exp_sqrt_mse", "pose_logit_l2"}
        assert set(row) - {"method", "source", "comparable_preset"} <= set(PRESETS["reliableswap"].columns)


def test_ffpp_config_selects_a_preset_and_names_every_missing_file(monkeypatch, tmp_path):
    config = (CONFIGS / "ffpp.yaml").read_text()
    assert "preset: reliableswap" in config
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises((MissingCheckpointError, ValueError)) as e:
        LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     run=False, save_config_callback=None, args=["--config", str(CONFIGS / "ffpp.yaml")])
    for f in ("net_sphere20_data_vggface2_acc_9955.pth", "epoch_20.pth", "similarity_Lm3D_all.mat",
              "hopenet_robust_alpha1.pkl"):
        assert f in str(e.value)
