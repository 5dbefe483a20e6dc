"""How far dlib's 5 points (68 landmarks reduced as Deep3D does) land from the MTCNN points
ReliableSwap's evaluation used, on the ``ffpp_reliableswap`` frames, and what that does to the
expression number (the reliableswap form ``sqrt(MSE * 64)`` and the mean L2) with the fixture's
stand-in ReconNet. Prints the table docs/evaluation.md quotes; asserts the measured facts loosely.

Run: ``pytest -q -m slow tests/eval/test_deep3d_landmarks_dlib.py -s``
"""
import numpy as np
import pytest
import torch

from helpers.ffpp_metric_checkpoints import standin_state
from ipsb.backbone.recon import ReconNet
from ipsb.data.deep3d_align import FivePoints, align_for_deep3d
from ipsb.eval.deep3d_aligned import to_uint8_hwc
from reliableswap_fixture import frame_tensor, reference, stored_points


def _expression(t: torch.Tensor, r: torch.Tensor) -> tuple[float, float]:
    sq = (r[:, 80:144] - t[:, 80:144]).double().square().sum(1)
    return sq.mean().sqrt().item(), sq.sqrt().mean().item()


@pytest.mark.slow   # dlib on 84 frames and ReconNet on 160 crops: about a minute on one core
def test_dlib_points_vs_reference_points_and_expression():
    ref = reference()
    lm3d = ref["lm3d_std"].numpy()
    dlib = FivePoints(detector="dlib")
    net = ReconNet()
    net.load_state_dict(standin_state("recon"))
    net.eval()
    dist, found, coeffs = [], [], {}
    for role in ("t", "s", "r"):
        crops = {"reference": [], "dlib": []}
        for i in range(40):
            if role == "s" and i % 10:          # 4 distinct source images
                continue
            rgb = to_uint8_hwc(frame_tensor(role, i)[None], "truncate")[0]
            pts, source = dlib(rgb)
            found.append(source == "dlib")
            if not bool(ref[f"mtcnn_fallback_{role}"][i]):
                dist.append(np.linalg.norm(pts.astype(np.float64) - ref[f"lm5_{role}"][i].numpy(), axis=1))
            for name, p in (("reference", stored_points(ref, role, i)), ("dlib", pts)):
                crops[name].append(align_for_deep3d(rgb, p, lm3d).image)
        if role == "s":
            continue
        for name, c in crops.items():
            x = torch.from_numpy((np.stack(c) / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
            with torch.no_grad():
                coeffs[role, name] = torch.cat([net(x[s:s + 8]) for s in range(0, 40, 8)])
    dist = np.stack(dist)                                                       # [81 frames, 5 points]
    mixed = {k: v.clone() for k, v in ((r, coeffs[r, "dlib"]) for r in ("t", "r"))}
    for role, i in (("r", 19), ("t", 38), ("t", 39)):                          # MTCNN's no-face frames
        mixed[role][i] = coeffs[role, "reference"][i]
    rows = {"reference points": _expression(coeffs["t", "reference"], coeffs["r", "reference"]),
            "dlib points": _expression(coeffs["t", "dlib"], coeffs["r", "dlib"]),
            "dlib points, reference fallback kept": _expression(mixed["t"], mixed["r"])}
    per_image = torch.cat([(coeffs[r, "dlib"] - coeffs[r, "reference"])[:, 80:144].norm(dim=1) for r in ("t", "r")])
    print(f"\ndlib found a face in {sum(found)}/{len(found)} frames (MTCNN: {len(found) - 3}/{len(found)})")
    print(f"point distance dlib vs MTCNN on {len(dist)} frames (px, 256 px frames): mean {dist.mean():.2f} "
          f"median {np.median(dist):.2f} p90 {np.percentile(dist, 90):.2f} max {dist.max():.2f}; per point "
          f"mean {np.round(dist.mean(0), 2).tolist()}")
    print(f"per-image expression change (L2 of 64): median {per_image.median():.4f} max {per_image.max():.4f}")
    print("| 5 points | expression sqrt(MSE*64) | expression mean L2 |\n|---|---|---|")
    for name, (sqrt_mse, l2) in rows.items():
        print(f"| {name} | {sqrt_mse:.4f} | {l2:.4f} |")
    assert torch.allclose(coeffs["t", "reference"], ref["deep3d_coeffs_t"], atol=2.3e-5)
    assert rows["reference points"][0] == pytest.approx(ref["aggregates"]["expression_l2"], abs=1e-6)
    assert sum(found) == len(found) == 84
    assert np.median(dist) < 3.0 and dist.max() < 10.0
    assert rows["dlib points"][0] == pytest.approx(rows["reference points"][0], rel=0.03)
