"""The inversion predict run in one process (Lightning's Trainer.predict): resumable shards merged into
the W+ file the stage configs read, its manifest, and the one-line refusals.

The command-line runs (a kill -9 and a rerun, 2-process DDP) are in test_invert_cli.py.
"""
from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from helpers.inversion_photos import astronaut_photos, toy_photos
from helpers.standin_checkpoints import write_rosinality, generator_state
from helpers.swap_world import toy_backbone
from ipsb.backbone.bundle import COMPONENTS, FaceBackbone
from ipsb.checkpoints import sha256_file
from ipsb.data.image_folder import FFHQDataModule
from ipsb.data.latents import LatentFileDataModule
from ipsb.data.manifest import Manifest
from ipsb.inversion import InversionModule

TOY_SIZE = 32


class CrashAt(Callback):
    """Raise at the start of predict batch ``k`` (batches before it are written)."""

    def __init__(self, k: int):
        self.k = k

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.k:
            raise RuntimeError("simulated crash")


class CrashAtEnd(Callback):
    """Raise after every batch was written, before the shards are merged."""

    def on_predict_end(self, trainer, pl_module):
        raise RuntimeError("simulated crash at the end")


class CountBatches(Callback):
    def __init__(self):
        self.n = 0

    def on_predict_batch_end(self, *args, **kwargs):
        self.n += 1


@pytest.fixture(autouse=True)
def _one_thread():
    """The toy world is many small ops: one thread is faster, and codes are bitwise reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def predict(module, dm, *callbacks):
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.predict(module, datamodule=dm, return_predictions=False)


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    bb = toy_backbone(TOY_SIZE)
    photos = tmp_path_factory.mktemp("toy_photos")
    codes = toy_photos(photos, bb, n=8)
    return bb, photos, codes


def toy_run(toy_world, output, **kwargs):
    bb, photos, _ = toy_world
    settings = dict(init="mean", steps=3, lr=0.05, lpips_weight=0.5)
    settings.update(kwargs)
    return (InversionModule(bb, output=str(output), **settings),
            FFHQDataModule(str(photos), image_size=TOY_SIZE, batch_size=2))


def test_crashed_run_resumes_to_the_same_file(toy_world, tmp_path):
    predict(*toy_run(toy_world, tmp_path / "a" / "w.pt"))
    out = tmp_path / "b" / "w.pt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict(*toy_run(toy_world, out), CrashAt(2))
    shards = out.with_name("w.pt.shards")
    assert not out.exists() and sorted(p.name for p in shards.glob("*.pt")) == ["000000000.pt", "000000002.pt"]
    counter = CountBatches()
    predict(*toy_run(toy_world, out), counter)
    assert counter.n == 2                                   # only the two missing batches were computed
    assert not shards.exists()
    assert out.read_bytes() == (tmp_path / "a" / "w.pt").read_bytes()


def test_run_killed_after_its_last_batch_only_merges(toy_world, tmp_path):
    out = tmp_path / "w.pt"
    with pytest.raises(RuntimeError, match="simulated crash at the end"):
        predict(*toy_run(toy_world, out), CrashAtEnd())
    assert len(list(out.with_name("w.pt.shards").glob("*.pt"))) == 4 and not out.exists()
    counter = CountBatches()
    predict(*toy_run(toy_world, out), counter)
    assert counter.n == 0 and torch.load(out, weights_only=True)["wplus"].shape[0] == 8


def test_batch_groups_are_fixed_and_skip_done_batches():
    from ipsb.data.batch_groups import BatchGroups, batch_groups

    assert batch_groups(5, 2) == [[0, 1], [2, 3], [4]]
    data = [{"i": torch.tensor(i)} for i in range(5)]
    groups = BatchGroups(data, 2, skip=[0, 1, 2])       # sample 3 is not done: its batch stays
    assert groups.groups == [[2, 3], [4]]
    assert [b["i"].tolist() for b in groups.loader()] == [[2, 3], [4]]


def test_output_manifest_and_what_the_stages_read(toy_world, tmp_path):
    bb, photos, codes = toy_world
    out = tmp_path / "w.pt"
    predict(*toy_run(toy_world, out, steps=15, lpips_weight=0.0))
    saved = torch.load(out, weights_only=True)
    assert saved["names"] == [f"{i:05d}.png" for i in range(8)]
    assert saved["wplus"].shape == (8, bb.generator.num_ws, bb.generator.w_dim)
    with torch.no_grad():   # the codes reproduce the photos better than the mean W they started from
        target = bb.synthesize(codes)
        fit = (bb.synthesize(saved["wplus"]) - target).square().mean()
        start = (bb.synthesize(bb.generator.mean_latent().expand(8, bb.generator.num_ws, -1)) - target).square().mean()
    assert fit < 0.3 * start
    manifest = Manifest.load(tmp_path / "w.manifest.json", kind="wplus")
    assert manifest.files == {n: {"sha256": sha256_file(photos / n)} for n in saved["names"]}
    assert manifest.data["shape"] == [8, bb.generator.num_ws, bb.generator.w_dim]
    assert manifest.config["model"]["steps"] == 15 and manifest.config["data"]["batch_size"] == 2
    dm = LatentFileDataModule(str(out), num_val_codes=2, num_val_pairs=2, batch_size=2,
                              num_ws=bb.generator.num_ws, w_dim=bb.generator.w_dim)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["w_s"].shape == (2, bb.generator.num_ws, bb.generator.w_dim)


def test_refusals(toy_world, tmp_path):
    bb, _, _ = toy_world
    out = tmp_path / "w.pt"
    out.write_bytes(b"earlier result")
    with pytest.raises(FileExistsError, match=r"w\.pt' exists; pass --model.init_args.overwrite true"):
        predict(*toy_run(toy_world, out))
    assert out.read_bytes() == b"earlier result"
    out.unlink()
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict(*toy_run(toy_world, out), CrashAt(1))
    with pytest.raises(ValueError, match=r"holds shards of a run with other settings \(they differ in: model\)"):
        predict(*toy_run(toy_world, out, steps=4))
    predict(*toy_run(toy_world, out, steps=4, overwrite=True))      # discards the other run's shards
    record = Manifest.load(tmp_path / "w.manifest.json").config
    assert record["model"]["steps"] == 4
    without_encoder = FaceBackbone(**{n: getattr(bb, n) for n in COMPONENTS if n != "encoder"})
    with pytest.raises(ValueError, match="has no encoder"):
        InversionModule(without_encoder, output=str(out))
    with pytest.raises(ValueError, match="steps > 0"):
        InversionModule(bb, output=str(out), init="mean", steps=0)


def test_num_ws_mismatch_is_one_line(standin_backbone, tmp_path):
    """A 32 px generator (8 W+ rows) with an e4e trained for the 64 px one (10 rows)."""
    from ipsb.backbone.stylegan2 import load_rosinality

    g32 = load_rosinality(write_rosinality(tmp_path / "g32.pt", *generator_state(32, standin_backbone.generator.w_dim)))
    parts = {name: getattr(standin_backbone, name) for name in ("face_model", "renderer", "regressor", "identity",
                                                                 "perceptual", "encoder", "masker", "pose")}
    bb = FaceBackbone(generator=g32, **parts)
    with pytest.raises(ValueError) as err:
        InversionModule(bb, output=str(tmp_path / "w.pt"))
    assert str(err.value) == ("the backbone's encoder gives W+ codes of [10,64] (num_ws, w_dim) but the 32 px "
                              "generator takes [8,64]: use an encoder trained for this generator (e4e: "
                              "stylegan_size 32)")


def test_e4e_inversion_of_photos_aligned_on_the_fly(standin_backbone, tmp_path):
    """Stand-in official backbone: real photographs, dlib-aligned while loading, through e4e."""
    photos = astronaut_photos(tmp_path / "photos", n=2)
    out = tmp_path / "w.pt"
    dm = FFHQDataModule(str(tmp_path / "photos"), image_size=256, batch_size=2, align=True)
    predict(InversionModule(standin_backbone, output=str(out)), dm)
    saved = torch.load(out, weights_only=True)
    g = standin_backbone.generator
    assert saved["names"] == [p.name for p in photos] and saved["wplus"].shape == (2, g.num_ws, g.w_dim)
    images = torch.stack([dm.dataset[i]["image"] for i in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(saved["wplus"], standin_backbone.encode(images), rtol=0, atol=1e-6)
    run = json.loads(json.dumps(Manifest.load(tmp_path / "w.manifest.json").config))
    assert run["model"]["backbone_files"] == standin_backbone.file_hashes() and run["data"]["align"] is True
