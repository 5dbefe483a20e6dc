"""The ``reliableswap`` metric preset against ReliableSwap's own FF++ evaluation code (fixture
``ffpp_reliableswap``: the reference's stand-in weights, frames and 5 points).

Per-frame network inputs and outputs must match within the fixture README's tolerances (inputs
1e-6 abs; embeddings, HopeNet logits and Deep3D coefficients 1e-5 x the reference's max |value|;
aligned crops and crop boxes identical), and the printed aggregates -- ID retrieval %, ID cosine,
pose, expression -- must come out of ipsb's harness (EvaluationModule + ipsb.metrics on an FF++
tree made of the frames) to 4 significant digits (ID % identical, the others within 1e-6 abs).
The end-to-end test runs the same through the ``ipsb test`` command with ``ffpp.yaml``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness_helpers import quiet_trainer
from helpers.ffpp_metric_checkpoints import MANIFESTS, write_ffpp_metric_checkpoints
from helpers.manifest_state import read_manifest
from helpers.det_weights import manifest
from ipsb.backbone.identity_sphere import SphereFace
from ipsb.data.align import NoFaceError, image_to_tensor
from ipsb.data.deep3d_align import FFHQ_LM5_256, FivePoints, align_for_deep3d
from ipsb.data.ffpp import FFPPDataModule
from ipsb.data.simple_aligners import IdentityAligner
from ipsb.eval.deep3d_aligned import AlignedDeep3DRegressor, to_uint8_hwc
from ipsb.eval.evaluator import EvaluationModule
from ipsb.eval.networks import MetricNetworks
from reliableswap_fixture import (FIX, ROLES, build_tree, frame_name, frame_tensor, png, reference, stored_points,
                                  write_lm3d_standin, write_reference_points)

REPO = Path(__file__).resolve().parent.parent.parent
REL = 1e-5          # per-frame outputs: max |ipsb - reference| <= REL * max |reference|


def assert_rel(got, want, what):
    err, scale = (got - want).abs().max().item(), want.abs().max().item()
    assert err <= REL * scale, f"{what}: max abs error {err:.3g} > {REL} x {scale:.3g}"


def sig4(x: float) -> str:
    return f"{x:.4g}"


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory, ref):
    folder = tmp_path_factory.mktemp("checkpoints")
    write_ffpp_metric_checkpoints(folder)
    write_lm3d_standin(ref, folder)
    return folder


@pytest.fixture(scope="module")
def points_file(tmp_path_factory, ref):
    return write_reference_points(ref, tmp_path_factory.mktemp("points") / "reference_points.json")


@pytest.fixture(scope="module")
def nets(ckpt_dir, points_file):
    """The reliableswap preset from its stand-in files; the 5 points from the reference's file only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPSB_CHECKPOINTS", str(ckpt_dir))
        return MetricNetworks.from_config({"preset": "reliableswap", "regressor": {
            "init_args": {"landmarks_file": str(points_file), "detector": None}}})


def test_preset_builds_the_reference_networks(nets, ckpt_dir):
    assert nets.preset.name == "reliableswap" and nets.replaced == ()
    ident = nets.identity
    assert isinstance(ident, SphereFace) and ident.input_size == (112, 112) and not ident.mirror
    assert manifest(ident.state_dict()) == read_manifest(MANIFESTS["sphere20_112x112"])   # strict, official layout
    assert nets.pose.preprocessing == "reliableswap" and nets.pose_has_logits
    reg = nets.regressor
    assert isinstance(reg, AlignedDeep3DRegressor) and reg.to_uint8 == "truncate"
    assert nets.expression_slice == (80, 144)
    files = {Path(f).name for fs in nets.checkpoint_files().values() for f in fs}
    assert {"net_sphere20_data_vggface2_acc_9955.pth", "hopenet_robust_alpha1.pkl", "epoch_20.pth",
            "similarity_Lm3D_all.mat", "reference_points.json"} <= files


def test_clean_preset_builds_from_the_same_files(ckpt_dir, points_file, ref):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPSB_CHECKPOINTS", str(ckpt_dir))
        clean = MetricNetworks.from_config({"preset": "clean", "regressor": {
            "init_args": {"landmarks_file": str(points_file), "detector": None}}})
    assert clean.preset.name == "clean" and clean.identity.mirror and clean.identity.input_size == (112, 112)
    x = torch.stack([frame_tensor("t", 0), frame_tensor("r", 0)])
    with torch.no_grad():
        assert clean.embed(x).shape == (2, 1024) and clean.identity.preprocess(x).shape == (2, 3, 112, 112)
        assert clean.pose.preprocess(x).shape == (2, 3, 224, 224) and clean.head_pose(x).shape == (2, 3, 66)
        assert clean.expression(x).shape == (2, 64)
    # the landmarks file is keyed by the frames' pixels, so it serves the rounding preset too
    assert clean.regressor.to_uint8 == "round" and clean.regressor.last_point_sources == ["file", "file"]


def test_network_inputs_and_aligned_crops_match_reference(nets, ref):
    debug = torch.load(FIX / "debug_intermediates.pt")
    items = [d["item"] for d in debug["images"]]                       # swaps of items 0 and 19
    x = torch.stack([frame_tensor("r", i) for i in items])
    torch.testing.assert_close(nets.identity.preprocess(x), debug["sphere_input_112"], rtol=0, atol=1e-6)
    torch.testing.assert_close(nets.pose.preprocess(x)[:, :, :48], debug["hopenet_input_256_rows_0_48"],
                               rtol=0, atol=1e-6)
    crops = np.stack([a.image for a in nets.regressor.align(x)])
    assert nets.regressor.last_point_sources == ["file", "file"]
    np.testing.assert_array_equal(crops, debug["deep3d_aligned_224_uint8_hwc"].numpy())
    given = nets.regressor.align(x, points=[stored_points(ref, "r", i) for i in items])   # the caller's points
    assert nets.regressor.last_point_sources == ["given", "given"]
    np.testing.assert_array_equal(np.stack([a.image for a in given]), crops)
    with torch.no_grad():
        stored = debug["deep3d_aligned_224_uint8_hwc"].numpy() / 255.0
        coeffs = nets.regressor.net(torch.from_numpy(stored.astype(np.float32)).permute(0, 3, 1, 2))
    assert_rel(coeffs, ref["deep3d_coeffs_r"][items], "ReconNet on the stored crops")


def test_uint8_round_trip_and_alignment_of_every_frame(nets, ref):
    lut = to_uint8_hwc(torch.arange(256, dtype=torch.uint8).float().div(127.5).sub(1).view(1, 1, 1, 256)
                       .expand(1, 3, 1, 256).contiguous(), "truncate")[0, 0, :, 0]
    assert np.array_equal(lut, ref["uint8_roundtrip_lut"].numpy())
    for role in ROLES:
        for i in range(40):
            original = png(frame_name(role, i))
            rgb = to_uint8_hwc(image_to_tensor(original)[None], "truncate")[0]
            changed = int((rgb != original).sum())
            assert changed == ref[f"uint8_roundtrip_changed_values_{role}"][i].item(), (role, i)
            al = align_for_deep3d(rgb, stored_points(ref, role, i), nets.regressor.lm3d)
            assert list(al.crop_box) == ref[f"deep3d_crop_box_{role}"][i].tolist(), (role, i)
            np.testing.assert_allclose(al.trans_params, ref[f"deep3d_trans_params_{role}"][i].numpy(),
                                       rtol=1e-12, atol=0)


def test_no_face_takes_the_fixed_ffhq_points(ref, nets):
    fallback = [(r["role"], r["item"]) for r in json.loads((FIX / "index.json").read_text())["mtcnn"]["fallback_images"]]
    assert fallback == [("r", 19), ("t", 38), ("t", 39)]
    blank = np.zeros((256, 256, 3), np.uint8)
    pts, source = FivePoints(detector=None)(blank)
    assert source == "fallback" and pts.dtype == np.float64
    for role, i in fallback:
        np.testing.assert_array_equal(pts, ref[f"lm5_{role}"][i].numpy())
        rgb = to_uint8_hwc(frame_tensor(role, i)[None], "truncate")[0]
        al = align_for_deep3d(rgb, pts, nets.regressor.lm3d)
        assert list(al.crop_box) == ref[f"deep3d_crop_box_{role}"][i].tolist()
    np.testing.assert_array_equal(FFHQ_LM5_256, pts)
    with pytest.raises(NoFaceError, match="no 5 points"):
        FivePoints(detector=None, no_face="error")(blank)


@pytest.mark.slow   # ~10 s: roles eval.py records but never aggregates
def test_roles_the_aggregates_do_not_read(nets, ref):
    """Target embeddings and the sources' logits / coefficients (recorded by the reference, unused)."""
    with torch.no_grad():
        targets = torch.stack([frame_tensor("t", i) for i in range(40)])
        emb = torch.cat([nets.identity.raw_embedding(nets.identity.preprocess(targets[s:s + 20]))
                         for s in (0, 20)])
        assert_rel(emb, ref["id_t"], "id_t")
        first = [10 * t for t in range(4)]                             # one item per source image
        sources = torch.stack([frame_tensor("s", i) for i in first])
        assert_rel(nets.pose.logits(sources), ref["hope_s"][first], "hope_s")
        assert_rel(nets.regressor(sources), ref["deep3d_coeffs_s"][first], "deep3d_coeffs_s")


class _Recorder:
    """Forward hooks on the harness' networks: every output in call order."""

    def __init__(self, nets):
        self.out = {k: [] for k in ("id", "yaw", "pitch", "roll", "coeffs", "sources")}
        hook = lambda key: (lambda m, i, o: self.out[key].append(o.detach().clone()))  # noqa: E731
        self.handles = [nets.identity.fc.register_forward_hook(hook("id")),
                        nets.pose.fc_yaw.register_forward_hook(hook("yaw")),
                        nets.pose.fc_pitch.register_forward_hook(hook("pitch")),
                        nets.pose.fc_roll.register_forward_hook(hook("roll")),
                        nets.regressor.net.register_forward_hook(hook("coeffs")),
                        nets.regressor.register_forward_hook(
                            lambda m, i, o: self.out["sources"].extend(m.last_point_sources))]

    def roles(self, key):
        """Calls alternate per batch: (source or target, swap) -> (first role [N,...], swap [N,...])."""
        calls = self.out[key]
        return torch.cat(calls[0::2]), torch.cat(calls[1::2])

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def harness(nets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("harness")
    tree = build_tree(tmp / "ffpp")
    module = EvaluationModule(nets, "ffpp", output_dir=str(tmp / "tables"), table_name="reliableswap")
    dm = FFPPDataModule(root=str(tree), aligner=IdentityAligner(256), manifest_path=str(tmp / "manifest.json"),
                        swaps="manipulated", batch_size=8)
    rec = _Recorder(nets)
    try:
        quiet_trainer().test(module, datamodule=dm, verbose=False)
    finally:
        rec.remove()
    return module, dm, rec


def test_harness_per_frame_outputs_match_reference(harness, ref):
    module, dm, rec = harness
    assert [it["target_frame"] for it in dm.manifest.data["items"]] == [i % 10 for i in range(40)]
    id_s, id_r = rec.roles("id")
    assert_rel(id_s, ref["id_s"], "id_s")
    assert_rel(id_r, ref["id_r"], "id_r")
    cos = torch.nn.functional.normalize(id_r, dim=1) @ torch.nn.functional.normalize(id_s, dim=1).t()
    torch.testing.assert_close(cos, ref["id_cos_sims"], rtol=0, atol=1e-5)
    assert torch.equal(cos.argmax(1) // 10, ref["id_pred_group"])
    for k, angle in enumerate(("yaw", "pitch", "roll")):
        t, r = rec.roles(angle)
        assert_rel(t, ref["hope_t"][:, k], f"hope_t {angle}")
        assert_rel(r, ref["hope_r"][:, k], f"hope_r {angle}")
    t, r = rec.roles("coeffs")
    assert_rel(t, ref["deep3d_coeffs_t"], "deep3d_coeffs_t")
    assert_rel(r, ref["deep3d_coeffs_r"], "deep3d_coeffs_r")
    assert rec.out["sources"] == ["file"] * 80
    assert dm.gallery_loader is False          # the preset's gallery is the items' own source images


def test_harness_aggregates_match_printed_reference(harness, ref):
    module, _, _ = harness
    agg = ref["aggregates"]
    (row,) = module.results
    assert row["num_items"] == 40 and row["preset"] == "reliableswap"
    assert row["id_top1_pct"] == agg["id_retrieval_pct"] == 12.5
    for key, want in (("id_cosine", agg["id_cosine_printed"]), ("pose_logit_l2", agg["pose_avg_l2"]),
                      ("exp_sqrt_mse", agg["expression_l2"])):
        assert sig4(row[key]) == sig4(want) and abs(row[key] - want) <= 1e-6, (key, row[key], want)
    # the preset reports the reference's four numbers only
    assert all(row[k] is None for k in ("id_top5_pct", "exp_l2", "pose_deg", "pose_bin_sqrt_mse"))
    md, js = module.table_files()
    table = json.loads(js.read_text())
    assert table["networks"]["preset"]["name"] == "reliableswap"
    assert "| 12.50 | - | 0.7564 |" in md.read_text() and "| reliableswap | 40 |" in md.read_text()


def _reference_aggregates(ref, items):
    """eval.py's aggregation (numpy, float32 like sklearn / torch there) restricted to ``items``; an item's
    group is its target video (eval.py's ``column // 10`` on its 10-frame videos)."""
    s = ref["id_s"][items].numpy()
    r = ref["id_r"][items].numpy()
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    cos = norm(r) @ norm(s).T
    group = np.asarray(items) // 10
    correct = group[np.argmin(1 - cos, axis=1)] == group
    n = len(items)
    first = np.arange(n // 10).repeat(10)
    pose = [np.sqrt(((ref["hope_r"][items, a] - ref["hope_t"][items, a]) ** 2).mean().item() * 66) / 2
            for a in range(3)]
    exp = ((ref["deep3d_coeffs_r"][items, 80:144] - ref["deep3d_coeffs_t"][items, 80:144]) ** 2).mean().item()
    return {"id_top1_pct": 100 * correct.mean(), "id_cosine": float(cos[first, first].mean()),
            "pose_logit_l2": float(np.mean(pose)), "exp_sqrt_mse": float(np.sqrt(exp * 64))}


def test_ipsb_test_command_with_ffpp_config(ckpt_dir, points_file, ref, tmp_path):
    """``ipsb test --config lightning_configs/eval/ffpp.yaml`` on 2 target videos x 5 frames (10 items)
    of the fixture, with the stand-in files in $IPSB_CHECKPOINTS and the reference's 5 points."""
    tree = build_tree(tmp_path / "ffpp", targets=(0, 1), frames=range(5))
    networks = {"preset": "reliableswap", "regressor": {"init_args": {"landmarks_file": str(points_file)}}}
    env = {**os.environ, "IPSB_CHECKPOINTS": str(ckpt_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "ipsb", "test", "--config", str(REPO / "lightning_configs/eval/ffpp.yaml"),
           "--data.init_args.root", str(tree), "--data.init_args.num_workers", "0",
           "--data.init_args.aligner", json.dumps({"class_path": "ipsb.data.simple_aligners.IdentityAligner",
                                                   "init_args": {"output_size": 256}}),
           "--model.init_args.networks", json.dumps(networks), "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "outputs/eval/ffpp"
    table = json.loads((out / "ffpp_FaceShifter.json").read_text())
    (row,) = table["rows"]
    assert row["method"] == "FaceShifter (dataset videos)" and row["num_items"] == 10
    want = _reference_aggregates(ref, [0, 1, 2, 3, 4, 10, 11, 12, 13, 14])
    assert row["id_top1_pct"] == want["id_top1_pct"]
    for key in ("id_cosine", "pose_logit_l2", "exp_sqrt_mse"):
        assert sig4(row[key]) == sig4(want[key]) and abs(row[key] - want[key]) <= 1e-5, (key, row[key], want[key])
    md = (out / "ffpp_FaceShifter.md").read_text()
    assert "| FaceShifter (dataset videos) | measured |" in md and "| reliableswap | 10 |" in md
    assert "| StyleIPSB | paper | 95.05 |" in md and "comparable to reliableswap" in md
    assert "Preset `reliableswap`" in md
