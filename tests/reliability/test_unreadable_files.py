"""Every way a file can be unreadable is named in one line: empty, truncated, not a checkpoint at all,
pickled objects, or of another kind -- stage checkpoints through ``ipsb swap`` and ``--ckpt_path``,
the basis through ``ipsb fit``, and every backbone loader, the basis, W+ and toy-weight readers.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from helpers.hostile import CONFIGS, QUIET, TOY, assert_refused, damaged, evil_pickle, snapshot
from ipsb.checkpoints import CorruptCheckpointError, UnsafeCheckpointError, WrongCheckpointKindError

KINDS = ("empty", "truncated", "text", "pickled")
REASONS = {"empty": "empty (0 bytes)", "truncated": "truncated or damaged",
           "text": "not a PyTorch checkpoint", "pickled": "pickled Python objects"}


def _bad(kind: str, path, good, marker):
    return evil_pickle(path, marker) if kind == "pickled" else damaged(path, kind, good)


# ---------------------------------------------------------------------------------------------- stages
@pytest.mark.parametrize("kind", KINDS + ("missing", "wrong-stage"))
def test_swap_names_an_unreadable_mapping_checkpoint(kind, world, tmp_path, ipsb, swap_args):
    marker = tmp_path / "MARKER"
    bad = {"missing": lambda: tmp_path / "missing.ckpt", "wrong-stage": lambda: world["detail"]}.get(
        kind, lambda: _bad(kind, tmp_path / f"{kind}.ckpt", world["mapping"], marker))()
    out = tmp_path / "out.png"
    res = ipsb(*swap_args(out, mapping=bad))
    words = {"missing": "not found", "wrong-stage": "is a DetailModule checkpoint; the mapping checkpoint (--mapping) "
                                                    "expects a MappingModule one"}.get(kind, REASONS.get(kind))
    line = assert_refused(res, "swap", bad, words, marker=marker)
    assert "weights_only=False" not in line and "needs basis" not in line
    assert not out.exists()


def test_swap_names_a_basis_checkpoint_given_as_blend(world, tmp_path, ipsb, swap_args):
    res = ipsb(*swap_args(tmp_path / "out.png", blend=world["basis"]))
    assert_refused(res, "swap", world["basis"], "BasisModule checkpoint", "--blend")


@pytest.mark.parametrize("kind", KINDS + ("missing", "wrong-model", "not-lightning"))
def test_fit_names_an_unreadable_ckpt_path(kind, world, tmp_path, ipsb):
    marker = tmp_path / "MARKER"
    bad = {"missing": lambda: tmp_path / "missing.ckpt", "wrong-model": lambda: world["detail"],
           "not-lightning": lambda: world["basis_file"]}.get(
        kind, lambda: _bad(kind, tmp_path / f"{kind}.ckpt", world["mapping"], marker))()
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--ckpt_path", bad, cwd=tmp_path)
    words = {"missing": "not found", "wrong-model": "is a DetailModule checkpoint; this config's model is a MappingModule",
             "not-lightning": "not a Lightning checkpoint"}.get(kind, REASONS.get(kind))
    line = assert_refused(res, "fit", bad, words, marker=marker)
    assert "Parsing of ckpt_path hyperparameters failed" not in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_name_an_unreadable_ckpt_path(command, world, tmp_path, ipsb):
    bad = damaged(tmp_path / "bad.ckpt", "truncated", world["mapping"])
    config = TOY / "mapping.yaml" if command == "validate" else CONFIGS / "eval" / "ffpp_toy.yaml"
    res = ipsb(command, "--config", config, "--ckpt_path", bad, cwd=tmp_path)
    assert_refused(res, command, bad, "truncated")


def test_a_checkpoint_written_by_ipsb_demo_resumes_and_loads(world, tmp_path, ipsb):
    """The demo's saving side (its ``_fit``) writes checkpoints ``ipsb fit --ckpt_path`` and
    ``load_from_checkpoint`` accept."""
    from helpers.swap_world import toy_backbone
    from ipsb.demo import _fit
    from ipsb.stages.mapping_module import MappingModule

    ckpt = tmp_path / "demo_mapping.ckpt"
    _fit("mapping", toy_backbone(), {"basis": str(world["basis_file"]), "hidden_dim": 16},
         {"batch_size": 2, "num_train_pairs": 8, "num_val_pairs": 2}, 1, ckpt, lambda *_: None)
    assert MappingModule.load_from_checkpoint(ckpt).editor is not None
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--ckpt_path", ckpt, "--trainer.max_steps", "2",
               "--data.init_args.batch_size", "2", "--data.init_args.num_val_pairs", "2",
               "--data.init_args.val_batch_size", "2", *QUIET, cwd=tmp_path)
    assert res.code == 0, res.lines
    last = torch.load(tmp_path / "outputs" / "toy" / "mapping" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2                       # resumed from step 1


# ---------------------------------------------------------------------------------------------- basis
def test_fit_names_a_missing_basis_file_not_a_union_dump(world, tmp_path, ipsb):
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--model.init_args.basis", "nowhere/basis.pt",
               "--model.init_args.backbone", world["backbone"], cwd=tmp_path)
    line = assert_refused(res, "fit", "nowhere/basis.pt", "not found", "ipsb fit --config")
    assert "Union" not in line and "Does not validate" not in line


def test_fit_names_a_basis_file_of_the_wrong_shape(world, tmp_path, ipsb):
    from ipsb.basis.artifact import Basis

    b = Basis.load(world["basis_file"])                   # 10 x 32 W+ of the toy generator ...
    other = Basis(torch.linalg.qr(torch.randn(8 * 16, 4))[0], {"exp": (0, 4)}, {}, {}, torch.ones(8, dtype=torch.bool),
                  8, 16, None, {})                        # ... and one of a generator with 8 x 16
    path = other.save(tmp_path / "other_basis.pt")
    res = ipsb("fit", "--config", TOY / "mapping.yaml", "--model.init_args.basis", path,
               "--model.init_args.backbone", world["backbone"], cwd=tmp_path)
    line = assert_refused(res, "fit", path)
    assert "Union" not in line and f"{b.num_ws}" in line and "8" in line


# ---------------------------------------------------------------------------------------------- loaders
def _lightning_ckpt(world):
    return world["mapping"]


#: backbone loaders (a file path -> a network) and the other readers
READERS = {
    "rosinality": lambda p: __import__("ipsb.backbone.stylegan2", fromlist=["x"]).load_rosinality(p),
    "e4e": lambda p: __import__("ipsb.backbone.encoder", fromlist=["x"]).load_e4e(p),
    "deep3d": lambda p: __import__("ipsb.backbone.recon", fromlist=["x"]).Deep3DRegressor(p),
    "ir_se50": lambda p: __import__("ipsb.backbone.identity_irse", fromlist=["x"]).load_ir_se50(p),
    "iresnet": lambda p: __import__("ipsb.backbone.identity_iresnet", fromlist=["x"]).load_iresnet(p),
    "sphere20": lambda p: __import__("ipsb.backbone.identity_sphere", fromlist=["x"]).load_sphere20(p),
    "hopenet": lambda p: __import__("ipsb.backbone.pose", fromlist=["x"]).load_hopenet(p),
    "bisenet": lambda p: __import__("ipsb.backbone.parsing", fromlist=["x"]).load_bisenet(p),
    "lpips": lambda p: __import__("ipsb.backbone.perceptual", fromlist=["x"]).Perceptual(backbone_weights=str(p)),
    "toy": lambda p: __import__("ipsb.backbone.toy.networks", fromlist=["x"]).ToyRegressor(weights=str(p)),
    "basis": lambda p: __import__("ipsb.basis.artifact", fromlist=["x"]).Basis.load(p),
    "wplus": lambda p: __import__("ipsb.data.latents", fromlist=["x"]).load_wplus_file(p),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_names_every_unreadable_file(reader, world, tmp_path):
    """Empty, truncated (zip and the legacy format of older checkpoints), not a checkpoint, pickled
    objects, and a file of another kind (a Lightning stage checkpoint): one line naming the file."""
    marker = tmp_path / "MARKER"
    good = tmp_path / "good.pt"
    torch.save({f"layer{i}.weight": torch.randn(64, 64) for i in range(4)}, good)
    legacy = tmp_path / "legacy.pth"
    torch.save({f"layer{i}.weight": torch.randn(64, 64) for i in range(4)}, legacy, _use_new_zipfile_serialization=False)
    cases = {damaged(tmp_path / f"{k}.pt", k, good): (CorruptCheckpointError, REASONS[k]) for k in ("empty", "truncated", "text")}
    cases[damaged(tmp_path / "legacy_truncated.pth", "truncated", legacy)] = (CorruptCheckpointError, "truncated or damaged")
    cases[evil_pickle(tmp_path / "pickled.pt", marker)] = (UnsafeCheckpointError, REASONS["pickled"])
    cases[evil_pickle(tmp_path / "pickled_legacy.pkl", marker, legacy=True)] = (UnsafeCheckpointError, REASONS["pickled"])
    cases[world["mapping"]] = (WrongCheckpointKindError, "is an ipsb MappingModule checkpoint (Lightning), not")
    for path, (error, words) in cases.items():
        with pytest.raises(error) as err:
            READERS[reader](path)
        msg = str(err.value)
        assert str(path) in msg and words in msg and "\n" not in msg, (path.name, msg)
        assert "weights_only=False" not in msg and "e4e" not in msg.replace("e4e_ffhq_encode.pt", "") or reader == "e4e"
    assert not marker.exists()


def test_a_lightning_checkpoint_given_as_the_generator_says_what_it_is(world, tmp_path, ipsb, swap_args):
    cfg = yaml.safe_load(world["backbone"].read_text())
    cfg["init_args"]["generator"] = {"class_path": "ipsb.backbone.stylegan2.load_rosinality",
                                     "init_args": {"path_or_name": str(world["blend"])}}
    (tmp_path / "backbone.yaml").write_text(yaml.safe_dump(cfg))
    res = ipsb(*swap_args(tmp_path / "out.png", backbone=tmp_path / "backbone.yaml"))
    line = assert_refused(res, "swap", world["blend"], "is an ipsb BlendModule checkpoint (Lightning), not a rosinality")
    assert "e4e" not in line


@pytest.mark.parametrize("where", ["fit", "swap"])
def test_a_misspelled_backbone_component_is_named(where, world, tmp_path, ipsb, swap_args):
    cfg = yaml.safe_load(world["backbone"].read_text())
    cfg["init_args"]["genrator"] = cfg["init_args"].pop("generator")
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    if where == "fit":
        res = ipsb("fit", "--config", TOY / "mapping.yaml", "--model.init_args.backbone", bad.name, cwd=tmp_path)
        line = assert_refused(res, "fit", bad.name, "unknown argument 'genrator'", "did you mean 'generator'")
    else:
        res = ipsb(*swap_args(tmp_path / "out.png", backbone=bad))
        line = assert_refused(res, "swap", bad, "genrator", "generator")
    assert "loop" not in line


def _assert_names_each(read, cases) -> None:
    """``read(path)`` raises CorruptCheckpointError naming the path and the words, for each (path, words)."""
    for path, words in cases:
        with pytest.raises(CorruptCheckpointError) as err:
            read(path)
        assert str(path) in str(err.value) and words in str(err.value), str(err.value)


def test_bfm_and_landmark_templates_name_non_matlab_files(world, tmp_path):
    from ipsb.backbone.bfm_io import read_bfm_mat
    from ipsb.data.deep3d_align import load_lm3d

    for read in (read_bfm_mat, load_lm3d):
        _assert_names_each(read, ((damaged(tmp_path / "empty.mat", "empty"), "empty"),
                                  (damaged(tmp_path / "text.mat", "text"), "not a MATLAB .mat file"),
                                  (world["mapping"], "a PyTorch checkpoint, not a MATLAB .mat file")))


def test_nvlabs_and_fid_readers_name_other_files(world, tmp_path):
    from ipsb.backbone.fid_inception import load_fid_helper_script
    from ipsb.backbone.stylegan2_nvlabs import load_nvlabs_pkl

    _assert_names_each(load_nvlabs_pkl, ((damaged(tmp_path / "empty.pkl", "empty"), "empty"),
                                         (damaged(tmp_path / "text.pkl", "text"), "truncated or not a pickle"),
                                         (world["mapping"], "is a PyTorch checkpoint (zip), not an NVlabs network pickle")))
    with pytest.raises(CorruptCheckpointError, match="not a TorchScript file"):
        load_fid_helper_script(world["mapping"], check_sha256=False)
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        load_fid_helper_script(world["mapping"])


def test_w_plus_files_of_the_wrong_shape_are_named(tmp_path):
    from ipsb.checkpoints import UnexpectedContentError
    from ipsb.data.latents import load_wplus_file

    torch.save({"wplus": torch.zeros(4, 18, 512)}, tmp_path / "ffhq_codes.pt")
    with pytest.raises(UnexpectedContentError, match=r"ffhq_codes.pt' holds W\+ codes of shape \[4, 18, 512\]"):
        load_wplus_file(tmp_path / "ffhq_codes.pt", num_ws=10, w_dim=32)
    before = snapshot(tmp_path)
    with pytest.raises(UnexpectedContentError):
        load_wplus_file(tmp_path / "ffhq_codes.pt", num_ws=10, w_dim=32)
    assert snapshot(tmp_path) == before
