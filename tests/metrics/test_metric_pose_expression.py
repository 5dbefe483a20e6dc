"""PoseError and ExpressionError on hand-computed cases, and HopeNet degrees against the fixture."""
import math

import pytest
import torch

from ipsb.metrics.expression_error import ExpressionError
from ipsb.metrics.pose_error import PoseError, hopenet_degrees


def one_hot_logits(bins):
    """[B,3] bin numbers -> [B,3,66] logits whose softmax is one-hot to float precision."""
    logits = torch.zeros(len(bins), 3, 66)
    for i, row in enumerate(bins):
        for a, b in enumerate(row):
            logits[i, a, b] = 200.0
    return logits


def test_hopenet_degrees_matches_fixture(fixtures_dir):
    ref = torch.load(fixtures_dir / "metrics" / "hopenet_degrees.pt")
    logits = torch.stack([ref["yaw_logits"], ref["pitch_logits"], ref["roll_logits"]], 1)
    want = torch.stack([ref["yaw_deg"], ref["pitch_deg"], ref["roll_deg"]], 1)
    torch.testing.assert_close(hopenet_degrees(logits), want, atol=1e-3, rtol=0)


def test_pose_degrees_hand_computed():
    m = PoseError(inputs="degrees")
    m.update(torch.tensor([[10.0, 0, 0], [0, 3, 4]]), torch.zeros(2, 3), torch.tensor([0, 1]))
    m.update(torch.tensor([[0.0, 3, 4]]), torch.zeros(1, 3), torch.tensor([1]))  # padded repeat
    out = m.compute()
    assert set(out) == {"deg_l2"}
    assert out["deg_l2"].item() == pytest.approx(7.5)


def test_pose_logits_both_variants():
    m = PoseError(inputs="logits")
    swap = one_hot_logits([[33, 33, 33], [40, 30, 20]])
    target = one_hot_logits([[36, 37, 33], [40, 30, 20]])
    m.update(swap, target, torch.tensor([0, 1]))
    out = m.compute()
    # sample 0: 9 deg yaw, 12 deg pitch -> 15; sample 1: 0 -> mean 7.5
    assert out["deg_l2"].item() == pytest.approx(7.5, abs=1e-4)
    # squared bin differences: 2 + 2 + 0 (sample 0), 0 (sample 1); MSE over 2*3*66 entries
    assert out["bin_sqrt_mse"].item() == pytest.approx(math.sqrt(4 / (2 * 3 * 66) * 66) / 2, rel=1e-6)


def test_pose_raw_logit_bins_and_shape_errors():
    m = PoseError(inputs="logits", bin_values="logits")
    t = torch.zeros(1, 3, 66)
    s = t.clone()
    s[0, 0, 0] = 6.0
    m.update(s, t, torch.tensor([0]))
    assert m.compute()["bin_sqrt_mse"].item() == pytest.approx(math.sqrt(36 / 198 * 66) / 2, rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B,3,66\]"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="inputs"):
        PoseError(inputs="radians")


def test_expression_hand_computed():
    m = ExpressionError()
    swap = torch.zeros(2, 64)
    swap[0, 0] = 3.0
    swap[1, 5] = 4.0
    m.update(swap, torch.zeros(2, 64), torch.tensor([4, 7]))
    m.update(swap[:1], torch.zeros(1, 64), torch.tensor([4]))   # padded repeat
    out = m.compute()
    assert out["l2"].item() == pytest.approx(3.5)
    assert out["sqrt_mse"].item() == pytest.approx(math.sqrt((9 + 16) / (2 * 64) * 64))
    with pytest.raises(ValueError, match=r"\[B,64\]"):
        m.update(torch.zeros(2, 63), torch.zeros(2, 63), torch.tensor([0, 1]))
