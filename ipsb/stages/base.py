"""StageModule: the LightningModule base every ipsb stage inherits.

It holds ``self.backbone`` (a frozen :class:`~ipsb.backbone.bundle.FaceBackbone`) and keeps it out of
everything that belongs to training:

* never in an optimizer: :meth:`trainable_parameters` excludes it, :meth:`configure_optimizers`
  builds the optimizer from :meth:`optimizer_groups`, and :meth:`on_train_start` refuses an optimizer
  that holds a backbone parameter;
* never in the stage's state or checkpoints: the stage's ``state_dict()`` leaves the backbone out
  and a strict ``load_state_dict`` does not ask for it (public torch state-dict hooks);
  :meth:`on_save_checkpoint` writes the backbone record instead of tensors
  (``checkpoint["ipsb_backbone"] = {"config", "file_hashes"}``: the full backbone config and the
  sha256 of every file it loaded); :meth:`on_load_checkpoint` checks those hashes against the live
  backbone (naming a file that differs) and never lets a checkpoint overwrite the backbone.

Hyper-parameters (Lightning's public ``save_hyperparameters``): every constructor argument of the
stage, except that ``backbone`` is stored as its config (``{"class_path", "init_args"}``) and
``optimizer`` / ``lr_scheduler`` as ``{"class_path", "init_args"}`` specs, so
``Stage.load_from_checkpoint(path)`` rebuilds everything from data through
:mod:`ipsb.config_objects` (allowlisted, type-checked), and a checkpoint stays small.

Optimizer and scheduler come from config (LightningCLI dependency injection):
``optimizer: OptimizerCallable`` is called with the stage's parameter groups
(:meth:`optimizer_groups`; e.g. DetailModule's second group at ``mapper_lr``), ``lr_scheduler:
LRSchedulerCallable | None`` with the optimizer; the scheduler steps every optimizer step.

A stage declares the backbone components it uses in ``backbone_components`` (None: all); built
from a config, the backbone builds only those (the config, and so the record, keeps all of them).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from ipsb.backbone.bundle import COMPONENTS, FaceBackbone
from ipsb.checkpoints import STAGE_KEY
from ipsb.config_objects import build, callable_spec, import_path
from ipsb.stages.pair_batch import check_pair, measure_pairs

BACKBONE_KEY = "ipsb_backbone"
#: Constructor arguments stored as specs, not as the objects they are.
OBJECT_ARGS = ("backbone", "optimizer", "lr_scheduler")


def adam(lr: float = 1e-3) -> dict:
    """``{"class_path": "torch.optim.Adam", "init_args": {"lr": lr}}``."""
    return {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}}


def adamw(lr: float = 1e-3, weight_decay: float = 0.0) -> dict:
    """``{"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": weight_decay}}``."""
    return {"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": weight_decay}}


def as_backbone(backbone: Union[FaceBackbone, Mapping, str], components: Optional[Sequence[str]] = None
                ) -> FaceBackbone:
    """A built FaceBackbone as it is, or a config (dict / YAML path) built with ``components`` only."""
    if isinstance(backbone, FaceBackbone):
        return backbone
    if isinstance(backbone, torch.nn.Module):
        raise ValueError(f"backbone must be a FaceBackbone (or its config), got {type(backbone).__name__}")
    return FaceBackbone.from_config(backbone, components)


class StageModule(LightningModule):
    """Base of the ipsb stages: a frozen ``self.backbone`` plus checkpoint/optimizer hygiene.

    Args:
        backbone: the frozen FaceBackbone (a built one, its config dict or a YAML path).
        optimizer: the optimizer, called with :meth:`optimizer_groups` (a ``{class_path, init_args}``
            spec, a class, or a ``functools.partial`` of one; None: nothing to optimize).
        lr_scheduler: optional scheduler, called with the optimizer; stepped every optimizer step.
    """

    #: Backbone components this stage uses (None: all that the config names).
    backbone_components: Optional[tuple[str, ...]] = None
    #: How errors and ``ipsb`` messages name this stage's checkpoints, and how to make one.
    checkpoint_label: str = "stage"
    train_hint: str = ""
    #: Constructor arguments that name files this stage reads (another stage's checkpoint, a basis):
    #: a relative one is also looked up next to a checkpoint that names it (``load_stage_checkpoint``).
    input_files: tuple[str, ...] = ()

    def __init__(self, backbone: FaceBackbone, optimizer: Optional[OptimizerCallable] = adam(),
                 lr_scheduler: Optional[LRSchedulerCallable] = None):
        super().__init__()
        opt_spec = callable_spec(optimizer, Optional[OptimizerCallable], "optimizer")       # checked before
        sched_spec = callable_spec(lr_scheduler, Optional[LRSchedulerCallable], "lr_scheduler")   # any build
        self.backbone = as_backbone(backbone, self.backbone_components)
        self.register_state_dict_post_hook(_without_backbone)
        self.register_load_state_dict_post_hook(_backbone_not_missing)
        self.optimizer_factory = None if opt_spec is None else build(opt_spec, OptimizerCallable, "optimizer")
        self.scheduler_factory = None if sched_spec is None else build(sched_spec, LRSchedulerCallable,
                                                                       "lr_scheduler")
        # Every constructor argument of the concrete stage (Lightning collects them from its __init__);
        # under LightningCLI the given config, whose backbone entry is the config it was built from.
        config_known = self.backbone.config is not None
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "_instantiator"]
                                  + (["backbone"] if config_known else []))
        given = self.hparams.get("backbone")
        if not config_known and isinstance(given, Mapping):
            self.backbone.config = copy.deepcopy(dict(given))
        self.hparams.pop("backbone", None)
        stored = {"optimizer": opt_spec, "lr_scheduler": sched_spec}
        if self.backbone.config is not None:
            stored["backbone"] = copy.deepcopy(self.backbone.config)
        self.save_hyperparameters(stored)

    # ------------------------------------------------------------------ parameters / optimizer
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters outside the backbone (the only ones an optimizer may hold)."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups handed to the optimizer (default: every trainable parameter, one group)."""
        return [{"params": [p for p in self.trainable_parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            return None
        groups = [g for g in self.optimizer_groups() if g["params"]]
        if not groups:
            return None
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError("lr_scheduler: ReduceLROnPlateau needs a monitored metric per step, which ipsb "
                             "stages do not log; use a step-based scheduler (e.g. torch.optim.lr_scheduler.StepLR)")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        frozen = {id(p) for p in self.backbone.parameters()}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                if any(id(p) in frozen for p in group["params"]):
                    raise ValueError(f"{type(self).__name__}: an optimizer holds backbone parameters; build it "
                                     f"from self.trainable_parameters()")

    # ------------------------------------------------------------------ checkpoints
    def backbone_record(self) -> dict:
        """``{"config": ..., "file_hashes": {file: sha256}}`` written into stage checkpoints: the
        hashes of the files of the components this stage uses (``backbone_components``)."""
        if self.backbone.config is None:
            raise ValueError("this stage's backbone was built without a config, so a checkpoint could not "
                             "rebuild it; build it with FaceBackbone.from_config(...) or from a YAML file")
        return {"config": copy.deepcopy(self.backbone.config), "file_hashes": self.backbone.file_hashes(self.backbone_components)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Drop the backbone's tensors; write the backbone record and the stage's class."""
        record = self.backbone_record()
        checkpoint[BACKBONE_KEY] = record
        checkpoint[STAGE_KEY] = import_path(type(self))
        hp = checkpoint.get("hyper_parameters")
        if isinstance(hp, dict):
            hp["backbone"] = record["config"]
            hp.pop("_instantiator", None)       # rebuilt through ipsb's builder, never another instantiator
            hp.setdefault("_class_path", checkpoint[STAGE_KEY])   # what `ipsb fit --ckpt_path` reads
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("backbone.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Check the backbone's files against the record; drop any backbone tensors a checkpoint
        carries (the frozen backbone is never overwritten)."""
        record = checkpoint.get(BACKBONE_KEY)
        if record is None:
            raise ValueError(f"not an ipsb stage checkpoint: no '{BACKBONE_KEY}' entry (backbone config + hashes)")
        self.backbone.check_hashes(record.get("file_hashes", {}))
        if self.backbone.config is None:
            self.backbone.config = copy.deepcopy(record.get("config"))
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("backbone.")]:
            del state[key]


def _without_backbone(module: StageModule, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: the frozen backbone is not part of a stage's state."""
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _backbone_not_missing(module: StageModule, incompatible_keys) -> None:
    """load_state_dict post-hook: a stage state never holds the backbone, so it is not missing."""
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys
                                         if not k.startswith("backbone.") and ".backbone." not in k]


class PairStageModule(StageModule):
    """A stage trained on (source, target) batches: one ``_step(batch, stage)`` serves the
    ``train``/``val``/``test`` loops and returns the loss (stages 1 and 2 use the one below; stage 3
    has its own).

    The training stages work on W+ codes, so they never build the backbone's image encoder (e4e).
    """

    backbone_components = tuple(c for c in COMPONENTS if c != "encoder")

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        """Stages 1 and 2: measure the W+ pairs once (:func:`~ipsb.stages.pair_batch.measure_pairs`), take
        ``self.losses(pairs) -> (terms, per-sample metrics, image)``, add :meth:`eval_metrics` outside
        training, log everything (:meth:`log_step`, trackers ``train_metrics`` / ``val_metrics``) and
        return ``terms["loss"]``."""
        w_s, w_t = check_pair(batch, self.num_ws, self.w_dim)
        pairs = measure_pairs(self.backbone, w_s, w_t, self.noise_mode)
        terms, metrics, _ = self.losses(pairs)
        if stage != "train":
            with torch.no_grad():
                metrics.update(self.eval_metrics(pairs, stage))
        self.log_step(stage, terms, w_s.shape[0], self.train_metrics if stage == "train" else self.val_metrics,
                      metrics)
        return terms["loss"]

    def eval_metrics(self, pairs, stage: str) -> dict[str, torch.Tensor]:
        """Per-sample metrics ``{name: [B]}`` computed only outside training (none by default)."""
        return {}

    def log_step(self, stage: str, terms: Mapping[str, torch.Tensor], batch_size: int, tracker=None,
                 metrics: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        """Log a step's scalar ``terms`` as ``{stage}/{name}`` (per step and epoch in training; epoch means
        synced over processes elsewhere) and, with a ``tracker``
        (:class:`~ipsb.eval.swap_measures.StepMeans`), its per-sample ``metrics`` ``{name: [B]}`` as epoch
        means."""
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items()}, batch_size=batch_size,
                      sync_dist=stage != "train", on_step=stage == "train", on_epoch=True)
        if tracker is not None:
            tracker.update(metrics)
            for name, m in tracker.metrics.items():
                self.log(f"{stage}/{name}", m, on_step=False, on_epoch=True, batch_size=batch_size)

    def training_step(self, batch: dict, batch_idx: int):
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")
