"""The metrics' ReliableSwap forms on the reference's own per-item values (``ffpp_reliableswap``
fixture): the aggregates ``inference/ffplus/eval.py`` printed, from its recorded embeddings, HopeNet
logits and Deep3D coefficients. Tolerance: the fixture README's (ID % identical; cosine, pose and
expression within 1e-6 abs)."""
import math

import pytest
import torch

from ipsb.metrics.expression_error import ExpressionError
from ipsb.metrics.id_retrieval import IDRetrieval, IDSimilarity
from ipsb.metrics.pose_error import PoseError


@pytest.fixture(scope="module")
def ref(request):
    return torch.load(request.config.rootpath / "tests/fixtures/ffpp_reliableswap/reference.pt")


def batches(n, size=7):
    """Uneven batches with a padded repeat of the first items, as a DistributedSampler would."""
    idx = list(range(n)) + [0, 1]
    return [torch.tensor(idx[s:s + size]) for s in range(0, len(idx), size)]


def test_reliableswap_id_retrieval_and_cosine(ref):
    agg = ref["aggregates"]
    group = torch.arange(40) // 10                        # each item's target video
    ret, sim, sim_all = IDRetrieval(top_k=(1,)), IDSimilarity(first_items_divisor=10), IDSimilarity()
    for i in batches(40):
        ret.update_gallery(ref["id_s"][i], group[i], i)   # gallery: each item's own source image
        ret.update(ref["id_r"][i], group[i], i)
        sim.update(ref["id_r"][i], ref["id_s"][i], i)
        sim_all.update(ref["id_r"][i], ref["id_s"][i], i)
    assert 100 * ret.compute()["top1"].item() == agg["id_retrieval_pct"] == 12.5
    assert sim.compute().item() == pytest.approx(agg["id_cosine_printed"], abs=1e-6)
    assert sim_all.compute().item() == pytest.approx(agg["id_cosine_all_items_mean_not_printed"], abs=1e-6)
    assert agg["id_cosine_printed"] != pytest.approx(agg["id_cosine_all_items_mean_not_printed"], abs=1e-3)


def test_reliableswap_pose_and_expression(ref):
    agg = ref["aggregates"]
    pose, expr = PoseError(inputs="logits"), ExpressionError()
    for i in batches(40):
        pose.update(ref["hope_r"][i], ref["hope_t"][i], i)
        expr.update(ref["deep3d_coeffs_r"][i, 80:144], ref["deep3d_coeffs_t"][i, 80:144], i)
    assert pose.compute()["logit_angle_l2"].item() == pytest.approx(agg["pose_avg_l2"], abs=1e-6)
    assert expr.compute()["sqrt_mse"].item() == pytest.approx(agg["expression_l2"], abs=1e-6)


def test_logit_angle_l2_hand_computed_and_deduplicated():
    m = PoseError(inputs="logits")
    t = torch.zeros(2, 3, 66)
    s = t.clone()
    s[0, 0, 0] = 6.0        # yaw of sample 0
    s[1, 2, 5] = 2.0        # roll of sample 1
    m.update(s, t, torch.tensor([0, 1]))
    m.update(s[:1], t[:1], torch.tensor([0]))              # padded repeat
    yaw, pitch, roll = (math.sqrt(36 / (2 * 66) * 66) / 2, 0.0, math.sqrt(4 / (2 * 66) * 66) / 2)
    assert m.compute()["logit_angle_l2"].item() == pytest.approx((yaw + pitch + roll) / 3, rel=1e-6)


def test_first_items_cosine_uses_the_lowest_sample_indices():
    sim = IDSimilarity(first_items_divisor=2)
    a = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0]])
    b = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, 1]])
    sim.update(a[2:], b[2:], torch.tensor([2, 3]))         # order of updates does not matter
    sim.update(a[:2], b[:2], torch.tensor([0, 1]))
    assert sim.compute().item() == pytest.approx(0.5)      # items 0, 1: cos 1 and 0
    short = IDSimilarity(first_items_divisor=10)
    short.update(a, b, torch.arange(4))
    assert math.isnan(short.compute().item())              # fewer than 10 items: nothing averaged
    with pytest.raises(ValueError, match="first_items_divisor"):
        IDSimilarity(first_items_divisor=0)
