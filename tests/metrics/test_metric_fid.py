"""FID: hand-computed values with a tiny feature network, de-duplication, real-statistics cache."""
import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from ipsb.metrics.fid import FID


class ChannelMeans(nn.Module):
    """image [B,3,H,W] -> [B,2]: mean of channels 0 and 1 (a transparent 'feature network')."""

    num_features = 2

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale))

    def forward(self, x):
        return x[:, :2].mean((2, 3)) * self.scale


def images_with_features(feats):
    """[N,2] feature rows -> constant images whose ChannelMeans are exactly those rows."""
    feats = torch.as_tensor(feats, dtype=torch.float32)
    img = torch.zeros(feats.shape[0], 3, 4, 4)
    img[:, 0] = feats[:, 0, None, None]
    img[:, 1] = feats[:, 1, None, None]
    return img


def reference_fid(real, fake):
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m1, m2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


REAL = [[0.0, 0.0], [0.5, 0.1], [-0.2, 0.4], [0.3, -0.3], [0.1, 0.2]]
FAKE = [[0.2, 0.1], [0.6, 0.3], [-0.1, 0.5], [0.4, 0.0]]


def test_fid_one_dimensional_closed_form():
    class First(nn.Module):
        num_features = 1

        def forward(self, x):
            return x[:, :1].mean((2, 3))

    m = FID(feature=First())
    real, fake = torch.tensor([[0.0], [0.2], [0.4]]), torch.tensor([[0.5], [0.9]])
    m.update(images_with_features(torch.cat([real, real], 1)), real=True, sample_index=torch.arange(3))
    m.update(images_with_features(torch.cat([fake, fake], 1)), real=False, sample_index=torch.arange(2))
    # (mu_r - mu_f)^2 + (sd_r - sd_f)^2 with unbiased sds 0.2 and 0.2828...
    want = (0.2 - 0.7) ** 2 + (0.2 - np.sqrt(0.08)) ** 2
    assert m.compute().item() == pytest.approx(want, rel=1e-5)


def test_fid_matches_scipy_and_drops_duplicates():
    m = FID(feature=ChannelMeans())
    m.update(images_with_features(REAL), real=True, sample_index=torch.arange(5))
    m.update(images_with_features(REAL[:1]), real=True, sample_index=torch.tensor([0]))   # padding repeat
    m.update(images_with_features(FAKE[:3]), real=False, sample_index=torch.arange(3))
    m.update(images_with_features(FAKE[3:] + FAKE[:1]), real=False, sample_index=torch.tensor([3, 0]))
    assert m.compute().item() == pytest.approx(reference_fid(REAL, FAKE), rel=1e-4)
    m.reset()  # keeps the real side
    m.update(images_with_features(REAL), real=False, sample_index=torch.arange(5))
    assert m.compute().item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        m.update(torch.zeros(2, 4, 4), real=False, sample_index=torch.arange(2))


def test_real_statistics_cache_hit_miss_and_mismatch(tmp_path):
    files = [f"img_{i:03d}.png" for i in range(5)]

    def real_batches():
        yield images_with_features(REAL[:3]), torch.arange(3)
        yield images_with_features(REAL[3:]), torch.arange(3, 5)

    def must_not_run():
        raise AssertionError("real statistics recomputed although the cache matched")

    a = FID(feature=ChannelMeans())
    path, hit = a.use_cached_real_statistics(tmp_path, files, real_batches)
    assert not hit and path.is_file()
    b = FID(feature=ChannelMeans())
    path_b, hit_b = b.use_cached_real_statistics(tmp_path, list(reversed(files)), must_not_run)  # order-free
    assert hit_b and path_b == path
    for m in (a, b):
        m.update(images_with_features(FAKE), real=False, sample_index=torch.arange(4))
    assert a.compute().item() == pytest.approx(reference_fid(REAL, FAKE), rel=1e-4)
    assert b.compute().item() == a.compute().item()
    # another dataset list or another feature network -> another cache file
    c = FID(feature=ChannelMeans())
    _, hit_c = c.use_cached_real_statistics(tmp_path, files[:4], real_batches)
    d = FID(feature=ChannelMeans(scale=2.0))
    path_d, hit_d = d.use_cached_real_statistics(tmp_path, files, real_batches)
    assert not hit_c and not hit_d and path_d != path
    with pytest.raises(ValueError, match="another feature network"):
        FID(feature=ChannelMeans(scale=3.0)).load_real_statistics(path)
    with pytest.raises(RuntimeError, match="cache"):
        b.update(images_with_features(REAL[:2]), real=True, sample_index=torch.arange(2))
