"""SwapEvaluation: the numbers of ``ipsb test`` inside every training run, exact under DDP.

On its schedule -- every ``every_n_val_runs`` validation runs and once at the end of fit -- the
callback measures the stage being trained on a fixed set of held-out pairs with the measuring code of
``ipsb test`` (:mod:`ipsb.eval.swap_measures`: the metrics of :mod:`ipsb.metrics`) and logs one
results row to every logger of the trainer.

**Pairs.**

* W+ pairs (the default, for latent-pair runs): the first ``num_pairs`` validation pairs (all, if it
  has fewer; the row's ``num_items`` says how many) of the run's DataModule (:class:`~ipsb.data.latents.LatentPairDataModule`,
  :class:`~ipsb.data.latents.LatentFileDataModule`: fixed by their seed, held out from training), or,
  when it has none, ``num_pairs`` pairs drawn with ``seed`` from the stage's generator. The stage swaps
  them (``swap_wplus(w_s, w_t)["swap"]``); each source code is an identity, the retrieval gallery is
  the sources (``pair_sources``), FID compares the swaps with the generated targets.
* Image pairs (``data``: an FF++ DataModule such as :class:`~ipsb.data.toy_ffpp.ToyFFPPDataModule`):
  its pairs and gallery loaders as ``ipsb test`` reads them; the stage's swapper
  (``face_swapper(**swapper_args)``, wrapped in :class:`~ipsb.eval.methods.IpsbSwapper` exactly as
  ``ipsb test`` wraps the one built from checkpoints) inverts and swaps the aligned crops; the gallery
  follows the networks' preset as in ``ipsb test``; FID compares the swaps with the target frames.
  With the same checkpoint, networks and data the row equals ``ipsb test``'s row of that swapper.

**Networks.** ``networks`` is the ``networks:`` entry of an ``ipsb test`` config (a preset and/or
networks, :class:`~ipsb.eval.networks.MetricNetworks`); None reads the stage's own backbone
(:meth:`MetricNetworks.from_backbone`: its identity network, its 3DMM regressor, its pose network or
the regressor's angles, FID on 3DMM coefficients).

**Logged** (scalars to every logger, at the trainer's global step, and into
``trainer.callback_metrics`` so ``ModelCheckpoint(monitor=...)`` can use them): ``<prefix>/<name>``
for the results-table row keys the networks fill (:data:`LOG_NAMES`): ``fid``, ``id_top1``,
``id_top5`` (percent, as in the table), ``id_cosine``, ``exp_l2``, ``exp_sqrt_mse``, ``pose_deg``,
``pose_bin_sqrt_mse``, ``pose_logit_l2``. A W&B logger also gets the per-pair table
``<prefix>/swap_pairs`` (``wandb.Table``: pair index, ``id_similarity``, ``exp_error``, ``pose_error``)
and the image grid ``<prefix>/swap_eval_grid`` (source | target | [intermediates |] swap; the first
``grid_rows`` pairs) through the logger's ``log_table`` / ``log_image``.

**Basis** (:class:`~ipsb.stages.basis_module.BasisModule`): at the end of fit, once the basis is solved,
what fits a basis (:mod:`ipsb.eval.basis_measures`): ``<prefix>/basis_energy/<group>`` and
``<prefix>/basis_id_per_attr/<group>`` (identity step per attribute step along the group's top
direction, ``basis_step`` times the W spread, over ``basis_samples`` seeded codes), also printed.

**DDP.** The pairs are cut into fixed batches of ``batch_size`` and batch ``k`` goes to process
``k mod world_size`` (processes short of a batch repeat one), so every pair is computed in the same
batch whatever the number of processes, and the metrics de-duplicate by pair index: N processes log
the numbers of one. Only rank 0 logs.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from ipsb.callbacks.image_grid import swap_grid
from ipsb.data.ffpp import FFPPDataModule
from ipsb.eval.networks import MetricNetworks
from ipsb.eval.swap_measures import PairEvaluation

#: Results-table row key -> logged name (``<prefix>/<name>``).
LOG_NAMES = {"fid": "fid", "id_top1_pct": "id_top1", "id_top5_pct": "id_top5", "id_cosine": "id_cosine",
             "exp_l2": "exp_l2", "exp_sqrt_mse": "exp_sqrt_mse", "pose_deg": "pose_deg",
             "pose_bin_sqrt_mse": "pose_bin_sqrt_mse", "pose_logit_l2": "pose_logit_l2"}
ROW_NAME = "stage"


def rank_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of ``range(n)``: fixed batches of ``batch_size``, batch ``k`` to process
    ``k mod world``; every process gets ``ceil(#batches / world)`` (the short ones repeat their first)."""
    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    mine = batches[rank::world]
    want = math.ceil(len(batches) / world)
    while len(mine) < want:
        mine.append(batches[len(mine) % len(batches)])
    return mine


class SwapEvaluation(Callback):
    """Measure the stage being trained like ``ipsb test`` does (see the module docstring).

    Args:
        every_n_val_runs: measure after every N-th validation run (0: only at the end of fit).
        at_fit_end: also measure once when training ends (skipped if the last validation run just did).
        networks: the metric networks (an ``ipsb test`` ``networks:`` config); None: the stage's backbone.
        fid: report FID (needs a ``fid`` feature network; the backbone's is its 3DMM coefficients).
        data: held-out image pairs (an FF++ DataModule); None: W+ pairs.
        num_pairs: W+ pairs measured, at most (None: all the DataModule's validation pairs).
        seed, truncation_psi: W+ pairs drawn from the generator when the DataModule has none.
        batch_size: pairs per batch (W+ pairs; image pairs keep the DataModule's batches).
        swapper_args: :class:`~ipsb.swap.FaceSwapper` options for image pairs (``inversion``,
            ``invert_steps``, ``invert_perceptual`` ...).
        output: which result of the swapper an image pair is measured on (``final``, ``stage2``, ``stage1``).
        basis_samples, basis_step, basis_seed: the basis measures (codes, step in W spreads, their seed).
        prefix: the logged names' prefix.
        table_rows: rows of the W&B per-pair table (0: no table); grid_rows: pairs in the W&B grid (0: none).
    """

    def __init__(self, every_n_val_runs: int = 1, at_fit_end: bool = True, networks: Optional[MetricNetworks] = None,
                 fid: bool = True, data: Optional[FFPPDataModule] = None, num_pairs: Optional[int] = 64,
                 seed: int = 54321, truncation_psi: float = 0.7, batch_size: int = 16,
                 swapper_args: Optional[dict] = None, output: str = "final", basis_samples: int = 8,
                 basis_step: float = 0.3, basis_seed: int = 2, prefix: str = "val", table_rows: int = 64,
                 grid_rows: int = 4):
        if every_n_val_runs < 0:
            raise ValueError(f"SwapEvaluation: every_n_val_runs must be >= 0, got {every_n_val_runs}")
        if num_pairs is not None and num_pairs < 2:
            raise ValueError(f"SwapEvaluation: num_pairs must be >= 2 (FID needs two samples), got {num_pairs}")
        if batch_size < 1 or basis_samples < 1:
            raise ValueError(f"SwapEvaluation: batch_size and basis_samples must be >= 1, got {batch_size}, "
                             f"{basis_samples}")
        if output not in ("final", "stage2", "stage1"):
            raise ValueError(f"SwapEvaluation: output must be final, stage2 or stage1, got {output!r}")
        self.every_n_val_runs, self.at_fit_end = int(every_n_val_runs), bool(at_fit_end)
        self.networks = networks if networks is None or isinstance(networks, MetricNetworks) \
            else MetricNetworks.from_config(networks)
        self.fid, self.data, self.num_pairs = bool(fid), data, num_pairs
        self.seed, self.truncation_psi, self.batch_size = int(seed), float(truncation_psi), int(batch_size)
        self.swapper_args, self.output = dict(swapper_args or {}), output
        self.basis_samples, self.basis_step, self.basis_seed = int(basis_samples), float(basis_step), int(basis_seed)
        self.prefix, self.table_rows, self.grid_rows = prefix.rstrip("/"), int(table_rows), int(grid_rows)
        self.val_runs, self.last_step = 0, -1
        #: every measurement of this run: ``{"step", "row" | "basis", "scalars"}`` (rank 0 and others alike)
        self.history: list[dict[str, Any]] = []
        self._evaluation: Optional[PairEvaluation] = None
        self._backbone_networks: Optional[MetricNetworks] = None
        self._codes: Optional[torch.Tensor] = None
        self._pairs: Optional[torch.Tensor] = None
        self._real_ready = False

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self._is_basis(pl_module):
            return
        need = "face_swapper" if self.data is not None else "swap_wplus"
        if not callable(getattr(pl_module, need, None)):
            raise TypeError(f"SwapEvaluation measures a swapping stage (MappingModule, DetailModule, BlendModule) "
                            f"or a BasisModule; {type(pl_module).__name__} has no {need}() method")
        self._evaluator(pl_module)                      # a missing network or FID feature fails here, not later
        if self.data is not None:
            self.data.swaps = None                       # the stage's swaps are measured, not the data's own
            if trainer.is_global_zero:
                self.data.prepare_data()
            trainer.strategy.barrier("swap-evaluation-data")
            self.data.setup("test")
            self.data.gallery_loader = self._gallery(self._metric_networks(pl_module)) == "source_frames"

    @staticmethod
    def _is_basis(pl_module: LightningModule) -> bool:
        from ipsb.stages.basis_module import BasisModule

        return isinstance(pl_module, BasisModule)

    def _metric_networks(self, pl_module: LightningModule) -> MetricNetworks:
        if self.networks is not None:
            return self.networks
        if self._backbone_networks is None:
            self._backbone_networks = MetricNetworks.from_backbone(pl_module.backbone, fid=self.fid)
        return self._backbone_networks

    def _gallery(self, nets: MetricNetworks) -> str:
        if self.data is None:
            return "pair_sources"
        return "item_sources" if nets.preset.id_gallery == "item_sources" else "source_frames"

    def _evaluator(self, pl_module: LightningModule) -> PairEvaluation:
        if self._evaluation is None:
            nets = self._metric_networks(pl_module)
            if self.fid and nets.fid is None:
                raise ValueError("SwapEvaluation(fid=true) needs a 'fid' feature network in its networks "
                                 "(e.g. ipsb.backbone.fid_inception.FIDHelperInception); add one or set fid: false")
            self._evaluation = PairEvaluation(nets, [ROW_NAME], self._gallery(nets), fid=self.fid,
                                              per_pair=self.table_rows > 0)
        return self._evaluation.to(pl_module.device)

    def _wplus_pairs(self, trainer: Trainer, pl_module: LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes [M,num_ws,w_dim], pairs [N,2] code indices)``: the DataModule's validation pairs or seeded ones."""
        if self._codes is None:
            val = getattr(getattr(trainer, "datamodule", None), "val_set", None)
            if val is not None and hasattr(val, "codes") and hasattr(val, "pairs"):
                codes, pairs = val.codes, val.pairs
            else:
                from ipsb.data.latents import sample_wplus

                n = self.num_pairs or 64
                codes = sample_wplus(pl_module.backbone.generator, 2 * n, self.seed, self.truncation_psi)
                pairs = torch.stack([torch.arange(n), torch.arange(n, 2 * n)], 1)
            if self.num_pairs is not None:
                pairs = pairs[:self.num_pairs]              # all of them when the DataModule has fewer
            if pairs.shape[0] < 2:
                raise ValueError(f"SwapEvaluation needs at least 2 held-out pairs, the DataModule has "
                                 f"{pairs.shape[0]}; raise its num_val_pairs")
            self._codes, self._pairs = codes.cpu(), pairs.long().cpu()
        return self._codes, self._pairs

    # ------------------------------------------------------------------ schedule
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._is_basis(pl_module):
            return
        self.val_runs += 1
        if self.every_n_val_runs and self.val_runs % self.every_n_val_runs == 0:
            self.measure(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_fit_end and not self._is_basis(pl_module) and self.last_step != trainer.global_step:
            self.measure(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_fit_end and self._is_basis(pl_module) and getattr(pl_module, "basis", None) is not None \
                and trainer.is_global_zero:
            self.measure_basis(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"val_runs": self.val_runs, "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val_runs = int(state_dict.get("val_runs", 0))
        self.last_step = int(state_dict.get("last_step", -1))

    # ------------------------------------------------------------------ measuring swaps
    def measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Measure the stage now (every process calls it) and log; returns the logged scalars."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.inference_mode(False), torch.no_grad():
                evaluation = self._evaluator(pl_module)
                evaluation.reset()
                grid = (self._measure_images if self.data is not None else self._measure_wplus)(
                    trainer, pl_module, evaluation)
                if not self._real_ready and evaluation.row_metrics[0].fid is not None:
                    evaluation.share_real_statistics()          # the real side is fixed: computed once
                    self._real_ready = True
                row = evaluation.rows()[0]                       # collective
                pairs = evaluation.per_pair_values(0) if evaluation.per_pair is not None else None
        finally:
            pl_module.train(was_training)
        scalars = {f"{self.prefix}/{name}": float(row[key]) for key, name in LOG_NAMES.items()
                   if row.get(key) is not None}
        self.last_step = trainer.global_step
        self.history.append({"step": trainer.global_step, "row": row, "scalars": scalars})
        self._publish(trainer, scalars)
        if trainer.is_global_zero:
            self._log_wandb(trainer, pairs, grid)
        return scalars

    def _measure_wplus(self, trainer: Trainer, pl_module: LightningModule, evaluation: PairEvaluation):
        codes, pairs = self._wplus_pairs(trainer, pl_module)
        device, grid = pl_module.device, None
        for k, idx in enumerate(rank_batches(pairs.shape[0], self.batch_size, trainer.global_rank, trainer.world_size)):
            p = pairs[idx]
            images = pl_module.swap_wplus(codes[p[:, 0]].to(device), codes[p[:, 1]].to(device))
            index = torch.tensor(idx, device=device)
            batch = {"source": images["source"], "target": images["target"], "sample_index": index,
                     "source_id": p[:, 0].to(device)}
            if not self._real_ready and evaluation.row_metrics[0].fid is not None:
                evaluation.add_real(images["target"], p[:, 1].to(device))
            evaluation.pairs_step(batch, [images["swap"]])
            if k == 0:
                grid = images
        return grid

    def _loader_batches(self, loader: DataLoader, rank: int, world: int) -> DataLoader:
        """The same batches as ``loader`` (sequential, its batch size), this process's share of them."""
        mine = rank_batches(len(loader.dataset), loader.batch_size, rank, world)
        return DataLoader(loader.dataset, batch_sampler=mine, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn)

    def _measure_images(self, trainer: Trainer, pl_module: LightningModule, evaluation: PairEvaluation):
        from ipsb.eval.methods import IpsbSwapper

        method = IpsbSwapper(swapper=pl_module.face_swapper(**self.swapper_args), output=self.output)
        loaders = self.data.test_dataloader()
        rank, world, device = trainer.global_rank, trainer.world_size, pl_module.device
        if evaluation.gallery_from_loader:
            for batch in self._loader_batches(loaders[1], rank, world):
                evaluation.gallery_step(_to(batch, device))
        grid = None
        for k, batch in enumerate(self._loader_batches(loaders[0], rank, world)):
            batch = _to(batch, device)
            swap = method(batch["source"], batch["target"])
            if not self._real_ready and evaluation.row_metrics[0].fid is not None:
                evaluation.add_real(batch["target"], batch["sample_index"])
            evaluation.pairs_step(batch, [swap])
            if k == 0:
                grid = {"source": batch["source"], "target": batch["target"], "swap": swap}
        return grid

    # ------------------------------------------------------------------ the basis
    def measure_basis(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """The basis measures of a finished BasisModule (rank 0 only: the basis is the same on every rank)."""
        from ipsb.data.latents import sample_wplus
        from ipsb.eval.basis_measures import basis_report, w_spread

        bb = pl_module.backbone
        with torch.inference_mode(False), torch.no_grad():
            w0 = sample_wplus(bb.generator, self.basis_samples, self.basis_seed, pl_module.truncation_psi)
            w0 = w0.to(pl_module.device)
            report = basis_report(pl_module.basis.to(pl_module.device), bb.generator, bb.regressor, bb.identity,
                                  pl_module.columns, w0, self.basis_step * w_spread(bb.generator))
        scalars = {f"{self.prefix}/{k}": float(v) for k, v in report.items()}
        self.history.append({"step": trainer.global_step, "basis": report, "scalars": scalars})
        self._publish(trainer, scalars, save=True)
        print("[ipsb] basis: " + ", ".join(f"{k} {v:.4g}" for k, v in report.items()))
        return scalars

    # ------------------------------------------------------------------ logging
    def _publish(self, trainer: Trainer, scalars: dict[str, float], save: bool = False) -> None:
        for name, value in scalars.items():
            trainer.callback_metrics[name] = torch.tensor(value)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            if save:
                logger.save()

    def _log_wandb(self, trainer: Trainer, pairs, grid: Optional[dict]) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            step = trainer.global_step
            if pairs is not None and self.table_rows > 0:
                index, names, values = pairs
                rows = [[int(i)] + [float(v) for v in vals] for i, vals in
                        zip(index[:self.table_rows].tolist(), values[:self.table_rows].tolist())]
                logger.log_table(key=f"{self.prefix}/swap_pairs", columns=["pair", *names], data=rows, step=step)
            if grid is not None and self.grid_rows > 0:
                logger.log_image(key=f"{self.prefix}/swap_eval_grid", images=[swap_grid(grid, self.grid_rows)],
                                 step=step)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
