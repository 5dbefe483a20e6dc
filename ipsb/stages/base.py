"""StageModule: the LightningModule base every ipsb stage inherits.

It holds ``self.backbone`` (a frozen :class:`~ipsb.backbone.bundle.FaceBackbone`) and keeps it out of
everything that belongs to training:

* never in an optimizer: :meth:`trainable_parameters` excludes it, the default
  :meth:`configure_optimizers` uses it, and :meth:`on_train_start` refuses an optimizer that holds a
  backbone parameter;
* never in ``state_dict()`` / checkpoints: a stage checkpoint holds the trainable weights, the
  backbone's config (``hyper_parameters["backbone"]`` = ``{"class_path", "init_args"}``) and, under
  ``checkpoint["ipsb_backbone"]``, that config plus the sha256 of every file the backbone loaded.
  ``load_from_checkpoint`` rebuilds the backbone from the config, and :meth:`on_load_checkpoint`
  refuses a file whose hash differs, naming it.

``backbone`` may be a built :class:`FaceBackbone`, a config dict, or a YAML path. Under LightningCLI
the original config dict reaches :meth:`save_hyperparameters` through Lightning's given-hparams
mechanism; built directly in Python, the config comes from :meth:`FaceBackbone.from_config`.
Subclasses call ``self.save_hyperparameters()`` as usual (the backbone object itself is never stored,
only its config).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Mapping, Optional, Union

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

from ipsb.backbone.bundle import FaceBackbone, load_config

BACKBONE_KEY = "ipsb_backbone"


class StageModule(LightningModule):
    """Base of the ipsb stages: a frozen ``self.backbone`` plus checkpoint/optimizer hygiene.

    Args: ``backbone`` (FaceBackbone, config dict or YAML path); ``lr`` learning rate of the default
    Adam optimizer over :meth:`trainable_parameters`.
    """

    def __init__(self, backbone: Union[FaceBackbone, dict, str], lr: float = 1e-3):
        super().__init__()
        if not isinstance(backbone, FaceBackbone):
            if isinstance(backbone, torch.nn.Module):
                raise ValueError(f"backbone must be a FaceBackbone (or its config), got {type(backbone).__name__}")
            backbone = FaceBackbone.from_config(backbone)
        self.backbone = backbone
        self.lr = lr

    # ------------------------------------------------------------------ hyper-parameters
    def save_hyperparameters(self, *args: Any, ignore: Optional[Union[list, str]] = None, frame=None,
                             logger: bool = True) -> None:
        """Lightning's ``save_hyperparameters``, storing the backbone's config instead of the object."""
        given = _given_hyperparameters.get()
        if frame is None:
            frame = inspect.currentframe().f_back
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        if given is not None and self.backbone.config is None and isinstance(given.get("backbone"), (Mapping, str)):
            self.backbone.config = load_config(given["backbone"])
        super().save_hyperparameters(*args, ignore=ignore + ["backbone"], frame=frame, logger=logger)
        wanted = "backbone" not in ignore and (not args or "backbone" in args)
        if wanted and self.backbone.config is not None and isinstance(self._hparams, dict):
            self._hparams["backbone"] = copy.deepcopy(self.backbone.config)
            self._hparams_initial = copy.deepcopy(self._hparams)

    def backbone_record(self) -> dict:
        """``{"config": ..., "file_hashes": {file: sha256}}`` written into stage checkpoints."""
        if self.backbone.config is None:
            raise ValueError("this stage's backbone was built without a config, so a checkpoint could not "
                             "rebuild it; build it with FaceBackbone.from_config(...) or from a YAML file")
        return {"config": copy.deepcopy(self.backbone.config), "file_hashes": self.backbone.file_hashes()}

    # ------------------------------------------------------------------ parameters / optimizer
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters outside the backbone (the only ones an optimizer may hold)."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def configure_optimizers(self):
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr) if params else None

    def on_train_start(self) -> None:
        frozen = {id(p) for p in self.backbone.parameters()}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                if any(id(p) in frozen for p in group["params"]):
                    raise ValueError(f"{type(self).__name__}: an optimizer holds backbone parameters; build it "
                                     f"from self.trainable_parameters()")

    # ------------------------------------------------------------------ state dict / checkpoints
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Module state without the backbone's tensors."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(prefix + "backbone.")]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load trainable weights; backbone entries (if any) are ignored, the backbone is never overwritten."""
        state = {k: v for k, v in state_dict.items() if not k.startswith("backbone.")}
        result = super().load_state_dict(state, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("backbone.")]
        unexpected = list(result.unexpected_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(f"error loading {type(self).__name__} state: missing keys {missing}, "
                               f"unexpected keys {unexpected}")
        result.missing_keys[:] = missing
        return result

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record = self.backbone_record()
        checkpoint[BACKBONE_KEY] = record
        hp = checkpoint.get("hyper_parameters")
        if isinstance(hp, dict) and "backbone" in hp and not isinstance(hp["backbone"], (Mapping, str)):
            hp["backbone"] = record["config"]
        sd = checkpoint.get("state_dict", {})
        for key in [k for k in sd if k.startswith("backbone.")]:
            del sd[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        record = checkpoint.get(BACKBONE_KEY)
        if record is None:
            raise ValueError(f"not an ipsb stage checkpoint: no '{BACKBONE_KEY}' entry (backbone config + hashes)")
        self.backbone.check_hashes(record.get("file_hashes", {}))


class PairStageModule(StageModule):
    """A stage trained on (source, target) batches: one ``_step(batch, stage)`` serves the
    ``train``/``val``/``test`` loops (subclasses implement it; it returns the loss)."""

    def _step(self, batch: dict, stage: str):
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int):
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")
