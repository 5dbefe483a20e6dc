"""The toy networks' training script (``python -m ipsb.training.toy_networks``) on a few samples."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.networks import ToyEncoder, ToyIdentity, ToyMasker, ToyRegressor
from ipsb.training import toy_networks as train

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
    with pytest.raises(SystemExit, match="--tangent-codes"):
        train.main(TINY + ["--out", str(tmp_path / "x"), "--tangent-steps", "5"])
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



def test_attribute_tangents_match_finite_differences_and_keep_identity_fixed():
    from ipsb.backbone.toy import world
    from ipsb.training.toy_data import attribute_tangents
    from ipsb.backbone.toy.generator import ToyGenerator

    gen = ToyGenerator().eval()
    w = gen.sample_wplus(3, seed=4, mix=True)
    out = attribute_tangents(gen, w, per_code=2, seed=1, image_dtype=torch.float32)
    assert out["tangent"].shape == (3, 2, 3, 64, 64) and out["coeff_tangent"].shape == (3, 2, world.NUM_COEFFS)
    sl = world.coeff_slices()
    moved = out["coeff_tangent"].abs().sum((0, 1)) > 0
    for name in ("id", "tex", "gamma"):                       # only expression and pose directions
        assert not moved[slice(*sl[name])].any()
    assert moved[slice(*sl["exp"])].all() and moved[slice(*sl["angle"])].all()
    assert not moved[sl["trans"][0] + 2]                      # depth is fixed in the toy world
    c = gen.coefficients(w)
    t = out["coeff_tangent"][:, 0]
    h = 1e-3
    with torch.no_grad():
        fd = (gen.compose(gen.raw_features_of(c + h * t, w)) - gen.compose(gen.raw_features_of(c - h * t, w))) / (2 * h)
        assert torch.allclose(out["image"], gen.synthesis(w), atol=1e-5)
    # the soft rasteriser's edges are sharp (sigma 0.35 px), so compare in norm, not per pixel
    assert float((fd - out["tangent"][:, 0]).norm() / fd.norm()) < 0.5


def test_tangent_penalty_is_the_embedding_derivative():
    from ipsb.training.toy_identity import tangent_penalty

    torch.manual_seed(0)
    ident = ToyIdentity(weights=None)
    x, t = torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, 2, 3, 64, 64)
    target = torch.zeros(4, 14)
    loss = tangent_penalty(ident, x, t, target, 3.0)(torch.tensor([0, 3, 5]))   # codes 0, 1, 2; tangents 0, 1, 1
    _, jv = torch.func.jvp(ident.features, (x[[0, 1, 2]],), (t[[0, 1, 2], [0, 1, 1]],))
    expected = 3.0 * jv.pow(2).mean() + ident.features(x[[0, 1, 2]]).pow(2).mean()
    assert torch.allclose(loss, expected, rtol=1e-3)


def test_train_fine_tunes_from_init_with_a_tangent_phase(tmp_path, capsys):
    out, cache, init = tmp_path / "out", tmp_path / "cache", tmp_path / "init"
    init.mkdir()
    torch.manual_seed(3)
    train.save_half(ToyIdentity(weights=None), init / "identity.pt")
    args = TINY + ["--cache-dir", str(cache), "--data-seeds", "5", "--nets", "identity", "--init", str(init),
                   "--tangent-codes", "4", "--tangent-steps", "2"]
    assert train.main(args + ["--out", str(out)]) == 0
    assert "local invariance" in capsys.readouterr().out
    assert sorted(p.name for p in cache.iterdir()) == ["shard_5_32_10.pt", "tangents_12_4_2.pt"]   # tangent seed = seed + 7 + shard seed
    tuned = torch.load(out / "identity.pt", weights_only=True)
    start = torch.load(init / "identity.pt", weights_only=True)
    assert any(not torch.equal(tuned[k], start[k]) for k in start)
    # steps 0: the init weights come back unchanged (no re-initialisation)
    zero = TINY[:TINY.index("--identity-steps")] + ["--identity-steps", "0", "--invariance-steps", "0", "0", "0"]
    assert train.main(zero + ["--cache-dir", str(cache), "--data-seeds", "5", "--nets", "identity", "--init", str(init),
                              "--out", str(tmp_path / "same")]) == 0
    same = torch.load(tmp_path / "same" / "identity.pt", weights_only=True)
    assert all(torch.equal(same[k], start[k]) for k in start)


REPO = Path(__file__).resolve().parents[2]
ENCODER_TINY = ["--nets", "encoder", "--n-train", "16", "--n-val", "16", "--data-seeds", "5", "--batch", "4",
                "--encoder-steps", "3", "--encoder-image-steps", "2", "--encoder-image-batch", "2"]


def test_train_encoder_with_the_module_command(tmp_path):
    """``python -m ipsb.training.toy_networks --nets encoder`` renders only the encoder's truncated codes,
    runs both phases and writes a strictly loadable encoder.pt with the generator's latent statistics."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "ipsb.training.toy_networks", *ENCODER_TINY, "--out", str(out), "--cache-dir", str(cache)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "encoder (W+ regression) step" in run.stdout and "encoder (image) step" in run.stdout
    assert sorted(p.name for p in cache.iterdir()) == ["encoder_shard_5_16_psi0.7.pt"]   # no partner shards
    shard = torch.load(cache / "encoder_shard_5_16_psi0.7.pt", weights_only=True)
    gen = ToyGenerator()
    torch.testing.assert_close(shard["wplus"], gen.sample_wplus(16, seed=5, truncation_psi=0.7, mix=True))
    enc = ToyEncoder(weights=str(out / "encoder.pt"))                    # strict load of the float16 state dict
    torch.testing.assert_close(enc.latent_avg, gen.w_avg, rtol=1e-3, atol=1e-3)
    log = json.loads((out / "train_log_encoder.json").read_text())
    assert {"encoder_image_mse", "encoder_wplus_mse", "encoder_edit_rel_err"} <= set(log["report"])
    assert log["args"]["encoder_truncation"] == "0.7"
    with pytest.raises(SystemExit, match="--encoder-truncation"):
        train.main(ENCODER_TINY + ["--out", str(tmp_path / "x"), "--encoder-truncation", "1.5"])


def test_encoder_image_loss_trains_the_encoder_through_the_frozen_generator():
    from ipsb.training.toy_encoder import image_loss, readout_loss, readout_scales, wplus_regression_loss

    gen = ToyGenerator().eval().requires_grad_(False)
    torch.manual_seed(1)
    enc = ToyEncoder(weights=None)
    enc.latent_avg.copy_(gen.w_avg)
    enc.latent_scale.copy_(gen.w_std)
    w = gen.sample_wplus(4, seed=8, truncation_psi=0.7, mix=True)
    x = gen.synthesis(w)
    i = torch.arange(4)
    scales = readout_scales(gen, gen.sample_wplus(64, seed=9, truncation_psi=0.7, mix=True))
    with torch.no_grad():
        offsets = enc(x)
        recon = gen.synthesis(enc.encode(x))
        regression = ((offsets - (w - gen.w_avg) / gen.w_std) ** 2).mean()
        torch.testing.assert_close(wplus_regression_loss(enc, gen, x, w, 0.0, {})(i), regression)
        expected = ((recon - x) ** 2).mean() + 0.5 * (regression + 2.0 * readout_loss(gen, enc.encode(x), w, scales))
        torch.testing.assert_close(image_loss(enc, gen, x, w, 0.5, 2.0, scales)(i), expected)
    before = float(((recon - x) ** 2).mean())
    train.fit(enc, image_loss(enc, gen, x, w, 0.0, 0.0, scales), 4, 12, 4, 3e-3, 0, "image")
    with torch.no_grad():
        after = float(((gen.synthesis(enc.encode(x)) - x) ** 2).mean())
    assert after < 0.7 * before, (before, after)
    assert all(p.grad is None for p in gen.parameters())                 # the generator stays frozen


def test_encoder_readout_loss_sees_only_what_the_image_shows():
    """The readout loss is 0 for a W+ change the image cannot show (rows 0-7 outside every coefficient
    readout) and positive for one it shows; it is standardised by the training codes' spread."""
    from ipsb.backbone.toy import world
    from ipsb.training.toy_encoder import readout_loss, readout_scales, wplus_regression_loss

    gen = ToyGenerator().eval().requires_grad_(False)
    w = gen.sample_wplus(6, seed=3, truncation_psi=0.7, mix=True)
    scales = readout_scales(gen, gen.sample_wplus(256, seed=4, truncation_psi=0.7, mix=True))
    assert scales["coeff_std"].shape == (world.NUM_COEFFS,) and float(scales["detail_var"]) > 0
    q = gen.true_subspace(tuple(name for name, _ in world.COEFF_LAYOUT))          # [320,k], rows 0-7
    d = torch.randn(6, world.NUM_WS * world.W_DIM, generator=torch.Generator().manual_seed(0))
    hidden = d - (d @ q) @ q.T
    hidden.view(6, world.NUM_WS, world.W_DIM)[:, 8:] = 0
    seen = (d @ q) @ q.T
    assert float(readout_loss(gen, w, w, scales)) == 0
    assert float(readout_loss(gen, w + 0.3 * hidden.view_as(w), w, scales)) < 1e-6
    assert float(readout_loss(gen, w + 0.3 * seen.view_as(w), w, scales)) > 0.05
    enc = ToyEncoder(weights=None)
    enc.latent_avg.copy_(gen.w_avg)
    enc.latent_scale.copy_(gen.w_std)
    x, i = gen.synthesis(w), torch.arange(6)
    with torch.no_grad():
        plain = wplus_regression_loss(enc, gen, x, w, 0.0, scales)(i)
        both = wplus_regression_loss(enc, gen, x, w, 2.0, scales)(i)
        torch.testing.assert_close(both - plain, 2.0 * readout_loss(gen, enc.encode(x), w, scales))
