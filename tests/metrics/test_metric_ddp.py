"""2-process DDP on CPU (gloo) gives exactly the 1-process metric values, with a padded sampler.

The dataset sizes (7 pairs, 9 gallery frames) are odd, so ``DistributedSampler`` pads each rank's
share with repeats; de-duplication by ``sample_index`` must make the counts exact. Values are
compared with ``torch.equal`` (bitwise): the metrics sort by sample index before reducing.
"""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DistributedSampler

from ipsb.metrics.expression_error import ExpressionError
from ipsb.metrics.fid import FID
from ipsb.metrics.id_retrieval import IDRetrieval, IDSimilarity
from ipsb.metrics.pose_error import PoseError

N_PAIRS, N_GALLERY, BATCH = 7, 9, 2


def make_data():
    g = torch.Generator().manual_seed(1234)
    return {
        "gallery": torch.randn(N_GALLERY, 8, generator=g),
        "gallery_video": torch.arange(N_GALLERY) // 3,              # 3 videos x 3 frames
        "swap_emb": torch.randn(N_PAIRS, 8, generator=g),
        "source_emb": torch.randn(N_PAIRS, 8, generator=g),
        "source_video": torch.arange(N_PAIRS) % 3,
        "swap_pose": torch.randn(N_PAIRS, 3, 66, generator=g),
        "target_pose": torch.randn(N_PAIRS, 3, 66, generator=g),
        "swap_exp": torch.randn(N_PAIRS, 64, generator=g),
        "target_exp": torch.randn(N_PAIRS, 64, generator=g),
        "real": torch.rand(N_GALLERY, 3, 8, 8, generator=g) * 2 - 1,
        "fake": torch.rand(N_PAIRS, 3, 8, 8, generator=g) * 2 - 1,
    }


def make_feature_net():
    torch.manual_seed(7)
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 5)).requires_grad_(False)


def run_metrics(pair_ids, gallery_ids):
    """Update every metric with the given item indices (in batches) and compute."""
    d = make_data()
    ret, sim, pose, expr = IDRetrieval(), IDSimilarity(), PoseError(), ExpressionError()
    sim_first = IDSimilarity(first_items_divisor=3)        # ReliableSwap's cosine: the first N // 3 items
    fid = FID(feature=make_feature_net())
    for s in range(0, len(gallery_ids), BATCH):
        i = torch.tensor(gallery_ids[s:s + BATCH])
        ret.update_gallery(d["gallery"][i], d["gallery_video"][i], i)
        fid.update(d["real"][i], real=True, sample_index=i)
    for s in range(0, len(pair_ids), BATCH):
        i = torch.tensor(pair_ids[s:s + BATCH])
        ret.update(d["swap_emb"][i], d["source_video"][i], i)
        sim.update(d["swap_emb"][i], d["source_emb"][i], i)
        sim_first.update(d["swap_emb"][i], d["source_emb"][i], i)
        pose.update(d["swap_pose"][i], d["target_pose"][i], i)
        expr.update(d["swap_exp"][i], d["target_exp"][i], i)
        fid.update(d["fake"][i], real=False, sample_index=i)
    out = {f"ret_{k}": v for k, v in ret.compute().items()}
    out.update({f"pose_{k}": v for k, v in pose.compute().items()})
    out.update({f"exp_{k}": v for k, v in expr.compute().items()})
    out["sim"], out["sim_first"], out["fid"] = sim.compute(), sim_first.compute(), fid.compute()
    return out


def _worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pairs = list(DistributedSampler(range(N_PAIRS), num_replicas=world, rank=rank, shuffle=False))
        gallery = list(DistributedSampler(range(N_GALLERY), num_replicas=world, rank=rank, shuffle=False))
        out = run_metrics(pairs, gallery)
        torch.save({"out": out, "pairs": pairs, "gallery": gallery}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_processes_equal_one(tmp_path):
    single = run_metrics(list(range(N_PAIRS)), list(range(N_GALLERY)))
    # fork: the children reuse the imported modules (spawn would re-import torch, ~10 s each here)
    mp.start_processes(_worker, args=(2, str(tmp_path / "pg_init"), str(tmp_path / "out")), nprocs=2,
                       join=True, start_method="fork")
    results = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    seen = results[0]["pairs"] + results[1]["pairs"]
    assert len(seen) == N_PAIRS + 1 and len(set(seen)) == N_PAIRS   # the sampler really padded
    for r in results:
        assert set(r["out"]) == set(single)
        for k, v in single.items():
            assert torch.equal(r["out"][k], v), (k, r["out"][k], v)
