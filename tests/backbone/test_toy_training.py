"""The toy networks' training script (``python -m ipsb.backbone.toy.train``) on a few samples."""
from __future__ import annotations

import json

import pytest
import torch

from ipsb.backbone.toy import train
from ipsb.backbone.toy.networks import ToyIdentity, ToyMasker, ToyRegressor

TINY = ["--n-train", "32", "--n-val", "16", "--steps", "3", "--identity-steps", "2", "--invariance-steps", "1", "1",
        "1", "--mask-steps", "2", "--batch", "4"]


def test_train_writes_loadable_weights_and_refuses_to_overwrite(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert train.main(TINY + ["--out", str(out), "--cache-dir", str(cache), "--data-seeds", "5", "6"]) == 0
    for cls, name in ((ToyRegressor, "regressor"), (ToyIdentity, "identity"), (ToyMasker, "masker")):
        net = cls(weights=str(out / f"{name}.pt"))               # strict load of the float16 state dict
        assert net.checkpoint_path == str(out / f"{name}.pt")
    log = json.loads((out / "train_log_regressor_masker_identity.json").read_text())
    assert set(log["r2_val"]) >= {"exp", "pose"} and "id_cos_same" in log["report"]
    shards = sorted(p.name for p in cache.iterdir())
    assert shards == ["shard_5_16_10.pt", "shard_6_16_11.pt"]    # 32 codes in two seeded shards
    first = (out / "regressor.pt").read_bytes()
    with pytest.raises(SystemExit, match="--overwrite"):
        train.main(TINY + ["--out", str(out), "--cache-dir", str(cache), "--data-seeds", "5", "6"])
    assert (out / "regressor.pt").read_bytes() == first
    capsys.readouterr()
    # the cached shards are read, not rendered again; the same seeds give the same weights
    assert train.main(TINY + ["--out", str(out), "--cache-dir", str(cache), "--data-seeds", "5", "6",
                              "--overwrite", "--nets", "regressor", "--others", str(out)]) == 0
    assert "rendered shard" not in capsys.readouterr().out
    assert (out / "regressor.pt").read_bytes() == first


def test_fit_cuts_steps_to_the_time_budget():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    loss = lambda i: ((net(x[i]) - y[i]) ** 2).mean()
    assert train.fit(net, loss, 64, 150, 8, 1e-2, 0, "plain") == 150
    assert train.fit(net, loss, 64, 100_000, 8, 1e-2, 0, "budget", max_seconds=0.05) < 100_000

