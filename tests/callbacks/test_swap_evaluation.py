"""SwapEvaluation in toy-world fits: schedule, logged names, values against an independent computation,
W&B offline run contents, the basis measures, and configuration errors.

Mechanics on the 32 px toy backbone with a handful of pairs; DDP and the comparison with ``ipsb test``
are in ``test_swap_evaluation_ddp.py`` and ``test_swap_evaluation_ffpp.py``.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from scipy import linalg

from helpers.swap_world import save_oracle_basis, toy_backbone
from ipsb.callbacks.swap_evaluation import LOG_NAMES, SwapEvaluation, rank_batches
from ipsb.data.latents import LatentPairDataModule
from ipsb.eval.networks import MetricNetworks
from ipsb.stages.base import adamw
from ipsb.stages.mapping_module import MappingModule

NAMES = ("fid", "id_top1", "id_top5", "id_cosine", "exp_l2", "exp_sqrt_mse", "pose_deg")
REPO = Path(__file__).resolve().parents[2]
FFPP_TOY = REPO / "lightning_configs" / "eval" / "ffpp_toy.yaml"


def toy_clean_networks(fid: bool) -> dict:
    """The ``networks`` entry of ``lightning_configs/eval/ffpp_toy.yaml`` (clean preset, toy networks),
    plus toy FID features (3DMM coefficients) when ``fid``."""
    cfg = yaml.safe_load(FFPP_TOY.read_text())["model"]["init_args"]["networks"]
    if fid:
        cfg["fid"] = {"class_path": "ipsb.eval.adapters.CoeffFeatures",
                      "init_args": {"regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}}}
    return cfg


@pytest.fixture(scope="module")
def basis_path(tmp_path_factory):
    return str(save_oracle_basis(tmp_path_factory.mktemp("basis") / "basis.pt"))


def _fit(basis_path, root, callback, max_steps, logger=None, val_pairs=6):
    seed_everything(0)
    module = MappingModule(toy_backbone(), basis=basis_path, hidden_dim=16, depth=2, optimizer=adamw(1e-2))
    dm = LatentPairDataModule(num_train_pairs=16, num_val_pairs=val_pairs, batch_size=2, val_batch_size=3,
                              truncation_psi=0.7, seed=0)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=logger or False,
                      callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=1,
                      val_check_interval=1, check_val_every_n_epoch=None, log_every_n_steps=1,
                      deterministic=True, default_root_dir=str(root))
    trainer.fit(module, dm)
    return module, dm, trainer


def test_rank_batches_give_every_process_the_same_number_of_fixed_batches():
    for n, bs, world in ((7, 3, 2), (5, 2, 3), (2, 4, 3), (8, 2, 2)):
        shares = [rank_batches(n, bs, r, world) for r in range(world)]
        assert len({len(s) for s in shares}) == 1
        batches = [b for s in shares for b in s]
        assert sorted({i for b in batches for i in b}) == list(range(n))
        fixed = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
        assert all(b in fixed for b in batches)          # a pair is always measured in the same batch


def _expected_row(module, dm, n):
    """The numbers of the first ``n`` validation pairs computed here, without the metric core:
    swaps from the stage, the backbone's networks, cosine retrieval among the sources, FID by scipy."""
    nets = MetricNetworks.from_backbone(module.backbone)
    codes, pairs = dm.val_set.codes, dm.val_set.pairs[:n]
    with torch.no_grad():
        out = module.swap_wplus(codes[pairs[:, 0]], codes[pairs[:, 1]])
        src, tgt, swap = out["source"], out["target"], out["swap"]
        e_src, e_swap = nets.embed(src), nets.embed(swap)
        cos = F.cosine_similarity(e_swap, e_src, dim=1).double()
        exp = (nets.expression(swap).double() - nets.expression(tgt).double()).norm(dim=1)
        pose = (nets.head_pose(swap).double() - nets.head_pose(tgt).double()).norm(dim=1)
        sims = F.normalize(e_swap, dim=1) @ F.normalize(e_src, dim=1).T
        rank = (sims > sims.diagonal()[:, None]).sum(1)
        f_fake, f_real = nets.fid(swap).double().numpy(), nets.fid(tgt).double().numpy()
    mu1, mu2 = f_real.mean(0), f_fake.mean(0)
    s1, s2 = np.cov(f_real, rowvar=False), np.cov(f_fake, rowvar=False)
    fid = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    return {"fid": fid, "id_top1": 100 * float((rank < 1).double().mean()),
            "id_top5": 100 * float((rank < 5).double().mean()), "id_cosine": float(cos.mean()),
            "exp_l2": float(exp.mean()), "exp_sqrt_mse": float(exp.square().mean().sqrt()),
            "pose_deg": float(pose.mean())}


def test_mapping_fit_logs_the_rows_on_schedule_to_every_logger(basis_path, tmp_path):
    cb = SwapEvaluation(every_n_val_runs=2, num_pairs=5, batch_size=2)
    module, dm, trainer = _fit(basis_path, tmp_path, cb, max_steps=5,
                               logger=CSVLogger(str(tmp_path), name="log"))
    # validation after every step: measured at the 2nd and 4th validation run and once at the end
    assert [h["step"] for h in cb.history] == [2, 4, 5]
    assert set(cb.history[-1]["scalars"]) == {f"val/{n}" for n in NAMES}
    assert cb.history[-1]["row"]["num_items"] == 5 and cb.history[-1]["row"]["preset"] == "custom"
    # the numbers are the metric definitions on the held-out pairs (the trained state at the end)
    want = _expected_row(module, dm, 5)
    got = cb.history[-1]["scalars"]
    for name, value in want.items():
        assert got[f"val/{name}"] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert cb.history[0]["scalars"]["val/exp_l2"] != got["val/exp_l2"]          # training moved the swap
    # every logger got them at the trainer's step; ModelCheckpoint could monitor them
    rows = list(csv.DictReader(open(next(tmp_path.glob("log/*/metrics.csv")))))
    logged = {int(r["step"]): float(r["val/fid"]) for r in rows if r.get("val/fid")}
    assert logged == pytest.approx({h["step"]: h["scalars"]["val/fid"] for h in cb.history})
    assert float(trainer.callback_metrics["val/id_cosine"]) == pytest.approx(got["val/id_cosine"])
    # the stage's own per-step validation logs keep their names (no clash with the callback's)
    assert any(r.get("val/id_similarity") for r in rows) and any(r.get("val/exp_error") for r in rows)


def test_wandb_offline_run_holds_the_scalars_and_the_pair_table(basis_path, tmp_path):
    import json

    from helpers.wandb_log import history
    from ipsb.loggers import WandbLogger

    logger = WandbLogger(project="ipsb-test", save_dir=str(tmp_path), offline=True)
    cb = SwapEvaluation(every_n_val_runs=1, num_pairs=5, batch_size=2, grid_rows=2)
    _fit(basis_path, tmp_path, cb, max_steps=1, logger=logger)
    logger.experiment.finish()
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    rows = history(run)
    scalars = next(r for r in rows if "val/fid" in r)
    assert scalars["trainer/global_step"] == 1
    for name, value in cb.history[0]["scalars"].items():
        assert scalars[name] == pytest.approx(value, rel=1e-6), name
    table_row = next(r for r in rows if "val/swap_pairs/path" in r)
    table = json.loads((run / "files" / table_row["val/swap_pairs/path"]).read_text())
    assert table["columns"] == ["pair", "id_similarity", "exp_error", "pose_error"]
    assert [r[0] for r in table["data"]] == [0, 1, 2, 3, 4]
    values = np.array([r[1:] for r in table["data"]])
    # the per-pair values are what the row averages
    assert values[:, 0].mean() == pytest.approx(scalars["val/id_cosine"], rel=1e-5)
    assert values[:, 1].mean() == pytest.approx(scalars["val/exp_l2"], rel=1e-5)
    assert values[:, 2].mean() == pytest.approx(scalars["val/pose_deg"], rel=1e-5)
    grid = next(r for r in rows if "val/swap_eval_grid/filenames" in r)
    assert (run / "files" / grid["val/swap_eval_grid/filenames"][0]).is_file()


def test_the_ipsb_test_networks_config_and_its_presets_fill_their_columns(basis_path, tmp_path):
    cb = SwapEvaluation(every_n_val_runs=0, networks=toy_clean_networks(fid=True), num_pairs=4, batch_size=4)
    _fit(basis_path, tmp_path, cb, max_steps=1)
    row = cb.history[0]["row"]
    assert row["preset"] == "clean" and [h["step"] for h in cb.history] == [1]
    # clean: ID top-1/5, ID cos, expression L2, pose degrees, FID; not sqrt(MSE*E)
    assert set(cb.history[0]["scalars"]) == {f"val/{LOG_NAMES[k]}" for k in
                                             ("fid", "id_top1_pct", "id_top5_pct", "id_cosine", "exp_l2", "pose_deg")}


def test_basis_run_reports_energy_and_identity_step_per_attribute_step(tmp_path, capsys, monkeypatch):
    """``ipsb fit --config lightning_configs/toy/basis.yaml`` (2 samples): the callback's printed line."""
    monkeypatch.chdir(tmp_path)          # the config's checkpoint folder is relative to the working directory
    from ipsb.backbone.toy.networks import ToyIdentity, ToyRegressor
    from ipsb.basis.artifact import Basis
    from ipsb.cli import main
    from ipsb.eval.basis_measures import basis_report, w_spread

    config = REPO / "lightning_configs" / "toy" / "basis.yaml"
    out = tmp_path / "basis.pt"
    assert main(["fit", "--config", str(config), "--model.init_args.output_path", str(out),
                 "--data.init_args.num_samples", "2", "--data.init_args.batch_size", "2",
                 "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[ipsb] basis: "))
    printed = dict((k, float(v)) for k, v in re.findall(r"(\S+) ([-+0-9.e]+|inf)(?:,|$)", line[len("[ipsb] basis: "):]))
    basis = Basis.load(out)
    assert set(printed) == {f"basis_{m}/{g}" for g in basis.groups for m in ("energy", "id_per_attr")}
    for g, e in basis.explained_energy.items():
        assert printed[f"basis_energy/{g}"] == pytest.approx(e, rel=1e-3)
    # the identity step per attribute step is the documented measure of the saved basis
    from ipsb.backbone.toy import ToyGenerator
    from ipsb.basis.probe import coefficient_columns
    from ipsb.data.latents import sample_wplus

    gen, reg, ident = ToyGenerator(), ToyRegressor(), ToyIdentity()
    groups = yaml.safe_load(config.read_text())["model"]["init_args"]["groups"]
    cols = coefficient_columns(gen.face_model.coeff_groups, groups)
    w0 = sample_wplus(gen, 8, 2, 0.7)
    step = 0.3 * w_spread(gen)
    assert basis_report(basis, gen, reg, ident, cols, w0, step)["basis_id_per_attr/exp"] == pytest.approx(
        printed["basis_id_per_attr/exp"], rel=1e-3)
    # it tells an identity-keeping direction from one that changes the person: the toy's true identity
    # direction, read the same way, moves the identity far more per expression step
    true_id = gen.true_subspace("identity")[:, :1]
    along_id = Basis(true_id, {"exp": (0, 1)}, {}, {}, torch.ones(gen.num_ws, dtype=torch.bool), gen.num_ws, gen.w_dim)
    id_ratio = basis_report(along_id, gen, reg, ident, {"exp": cols["exp"]}, w0, step)["basis_id_per_attr/exp"]
    assert printed["basis_id_per_attr/exp"] < 0.2 * id_ratio, (printed, id_ratio)
    assert math.isfinite(printed["basis_id_per_attr/pose"])


def test_configuration_errors_are_one_line(basis_path, tmp_path):
    with pytest.raises(ValueError, match="num_pairs must be >= 2"):
        SwapEvaluation(num_pairs=1)
    with pytest.raises(ValueError, match="every_n_val_runs"):
        SwapEvaluation(every_n_val_runs=-1)
    with pytest.raises(ValueError, match="needs a 'fid' feature network"):
        _fit(basis_path, tmp_path, SwapEvaluation(networks=toy_clean_networks(fid=False)), max_steps=1)
    with pytest.raises(ValueError, match="at least 2 held-out pairs"):
        _fit(basis_path, tmp_path, SwapEvaluation(), max_steps=1, val_pairs=1)
