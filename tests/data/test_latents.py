"""LatentPairDataModule / LatentFileDataModule: seeded pairs, fixed validation, shape checks, resumable order."""
import pytest
import torch

from ipsb.backbone.toy import ToyGenerator
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError
from ipsb.data.latents import LatentFileDataModule, LatentPairDataModule, ResumableSampler, sample_wplus


@pytest.fixture(scope="module")
def gen():
    return ToyGenerator(seed=0).eval()


def test_pairs_are_seeded_distinct_and_truncated(gen):
    a = LatentPairDataModule(num_train_pairs=32, num_val_pairs=8, batch_size=4, truncation_psi=0.5, generator=gen)
    b = LatentPairDataModule(num_train_pairs=32, num_val_pairs=8, batch_size=4, truncation_psi=0.5, generator=gen)
    a.setup("fit"), b.setup("fit")
    torch.testing.assert_close(a.train_set.codes, b.train_set.codes, rtol=0, atol=0)
    batch = next(iter(a.val_dataloader()))
    assert batch["w_s"].shape == (8, gen.num_ws, gen.w_dim) and batch["w_t"].shape == (8, gen.num_ws, gen.w_dim)
    assert (batch["w_s"] - batch["w_t"]).abs().amax((1, 2)).min() > 1e-3
    # all rows of a sampled code are one w; psi=0.5 halves the spread around w_avg
    torch.testing.assert_close(batch["w_s"][:, 0], batch["w_s"][:, 7])
    full = LatentPairDataModule(num_train_pairs=32, num_val_pairs=8, truncation_psi=1.0, generator=gen)
    full.setup("fit")
    spread = lambda w: (w[:, 0] - gen.w_avg).norm(dim=1).mean()
    ratio = spread(a.val_set.codes) / spread(full.val_set.codes)
    assert abs(ratio.item() - 0.5) < 1e-4
    # validation pairs do not depend on the training seed
    c = LatentPairDataModule(num_train_pairs=32, num_val_pairs=8, truncation_psi=0.5, seed=7, generator=gen)
    c.setup("fit")
    torch.testing.assert_close(c.val_set.codes, a.val_set.codes, rtol=0, atol=0)
    assert not torch.equal(c.train_set.codes, a.train_set.codes)


def test_sample_wplus_matches_the_generator_mapping(gen):
    w = sample_wplus(gen, 5, seed=3, truncation_psi=1.0)
    z = torch.randn(5, gen.z_dim, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(w[:, 4], gen.mapping(z))


def test_without_a_generator_setup_says_what_is_missing():
    dm = LatentPairDataModule(num_train_pairs=4, num_val_pairs=2)
    with pytest.raises(ValueError, match="needs a generator"):
        dm.setup("fit")


def test_sampler_order_depends_on_epoch_and_skips_done_batches():
    data = list(range(20))
    s0 = list(ResumableSampler(data, seed=1, batch_size=4, position=lambda: (0, 0)))
    s1 = list(ResumableSampler(data, seed=1, batch_size=4, position=lambda: (1, 0)))
    resumed = list(ResumableSampler(data, seed=1, batch_size=4, position=lambda: (1, 2)))
    assert sorted(s0) == data and s0 != s1
    assert resumed == s1[8:]


def test_file_datamodule_reads_codes_and_holds_out_validation(tmp_path):
    codes = torch.randn(40, 10, 32)
    torch.save({"wplus": codes}, tmp_path / "codes.pt")
    dm = LatentFileDataModule(str(tmp_path / "codes.pt"), num_val_codes=8, num_val_pairs=6, batch_size=4,
                              num_ws=10, w_dim=32)
    dm.setup("fit")
    assert len(dm.train_set) == 32 and len(dm.val_set) == 6
    assert (dm.train_set.pairs < 32).all() and (dm.val_set.pairs >= 32).all()
    assert (dm.val_set.pairs[:, 0] != dm.val_set.pairs[:, 1]).all()
    batch = next(iter(dm.train_dataloader()))
    assert batch["w_s"].shape == (4, 10, 32)


def test_file_datamodule_errors_name_the_file_and_the_shape(tmp_path):
    torch.save(torch.randn(20, 18, 512), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"wrong\.pt.*\[20, 18, 512\].*\[N,10,32\]"):
        LatentFileDataModule(str(tmp_path / "wrong.pt"), num_val_codes=4, num_ws=10, w_dim=32).setup("fit")
    torch.save(torch.randn(20, 512), tmp_path / "flat.pt")
    with pytest.raises(ValueError, match="num_ws,w_dim"):
        LatentFileDataModule(str(tmp_path / "flat.pt"), num_val_codes=4).setup("fit")
    with pytest.raises(MissingCheckpointError, match="nothere.pt"):
        LatentFileDataModule(str(tmp_path / "nothere.pt")).setup("fit")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="junk.pt"):
        LatentFileDataModule(str(tmp_path / "junk.pt")).setup("fit")
