"""The LightningCLI behind ``ipsb fit|validate|test|predict``.

* **Typed building.** Model and data are ``class_path``/``init_args`` (subclass mode); everything is
  resolved by jsonargparse under ipsb's policy (:mod:`ipsb.config_objects`: allowlisted class paths,
  types checked before calls). A stage's ``backbone`` is built through
  :meth:`FaceBackbone.from_config` with only the components the stage declares
  (``backbone_components``), so the basis never loads e4e; the saved ``config.yaml`` and the stage's
  hyper-parameters keep the full backbone config. Optimizer and scheduler are the stages' own
  ``optimizer``/``lr_scheduler`` arguments (LightningCLI's automatic top-level ones are off).
* **Paths.** A reference to another config file (``backbone: ../backbone/toy.yaml``) resolves
  relative to the config that names it; data and output paths resolve relative to the working
  directory.
* **Runs are never overwritten by accident.** ``ipsb fit`` in a folder that already holds a run
  (checkpoints in a ModelCheckpoint folder, or a saved ``config.yaml``) stops with one line, unless
  it resumes (``--ckpt_path last`` or a checkpoint path) or the model was told to overwrite its
  outputs (``--model.init_args.overwrite true``). A resumed run keeps the first ``config.yaml`` and
  saves its own as ``config.resume-N.yaml``. ``--ckpt_path last`` with no checkpoint to resume from
  is refused too (Lightning would silently start over).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional, Sequence

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ipsb.config_objects import plain, resolve_class


class ExistingRunError(FileExistsError):
    """``ipsb fit`` would write into a folder that holds an earlier run; the message says what to do."""


def _stage_class(model: Namespace) -> Optional[type]:
    """The StageModule subclass a model spec names (None for other LightningModules)."""
    from ipsb.stages.base import StageModule

    cls = resolve_class(model.class_path, LightningModule, "model class_path")
    return cls if issubclass(cls, StageModule) else None


def with_built_backbone(cfg: Namespace) -> Namespace:
    """A copy of ``cfg`` whose stage backbone spec is replaced by the backbone built with
    :meth:`FaceBackbone.from_config` and the stage's ``backbone_components`` (unchanged otherwise)."""
    from ipsb.backbone.bundle import FaceBackbone

    model = cfg.get("model") if isinstance(cfg, Namespace) else None
    if not isinstance(model, Namespace) or not isinstance(model.get("class_path"), str):
        return cfg
    spec = (model.get("init_args") or Namespace()).get("backbone")
    if not isinstance(spec, Namespace):
        return cfg
    stage = _stage_class(model)
    if stage is None:
        return cfg
    cfg = cfg.clone()
    cfg.model.init_args.backbone = FaceBackbone.from_config(plain(spec), stage.backbone_components)
    return cfg


class StageArgumentParser(LightningArgumentParser):
    """LightningCLI's parser; instantiating builds a stage's backbone with only the parts it uses."""

    def instantiate(self, namespace, *args, **kwargs):
        return super().instantiate(with_built_backbone(namespace), *args, **kwargs)


class RunConfigSaver(SaveConfigCallback):
    """Saves the run's ``config.yaml`` without ever replacing an earlier run's.

    ``mode``: ``"new"`` (refuse an existing file, one line), ``"resume"`` (keep it; save this run's
    config as ``config.resume-N.yaml``) or ``"overwrite"`` (the user asked to replace outputs).
    """

    def __init__(self, *args, mode: str = "new", resumable: bool = True, overwritable: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode, self.resumable, self.overwritable = mode, resumable, overwritable

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = Path(trainer.log_dir)
            if (log_dir / self.config_filename).exists():
                if self.mode == "resume":
                    n = 1
                    while (log_dir / f"config.resume-{n}.yaml").exists():
                        n += 1
                    self.config_filename = f"config.resume-{n}.yaml"
                elif self.mode == "overwrite":
                    self.overwrite = True
                else:
                    raise ExistingRunError(existing_run_message(log_dir, [log_dir / self.config_filename],
                                                                self.resumable, self.overwritable))
        super().setup(trainer, pl_module, stage)


def existing_run_message(folder: Path, found: Sequence[Path], resumable: bool = True,
                         overwritable: bool = False) -> str:
    """One line: what is in the way, and the ways forward."""
    names = ", ".join(str(p) for p in list(found)[:2]) + (" ..." if len(found) > 2 else "")
    ways = (["resume it with --ckpt_path last"] if resumable else []) + \
        (["replace it with --model.init_args.overwrite true"] if overwritable else [])
    return (f"'{folder}' already holds a run ({names}); " + ", or ".join(ways + [
        "start a new run after moving that folder away (or with the config's output folders pointed elsewhere)"]))


def _checkpoint_dirs(trainer_cfg: Namespace) -> list[Path]:
    callbacks = trainer_cfg.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    out = []
    for cb in callbacks:
        if isinstance(cb, Namespace) and str(cb.get("class_path", "")).endswith("ModelCheckpoint"):
            dirpath = (cb.get("init_args") or Namespace()).get("dirpath")
            if dirpath:
                out.append(Path(str(dirpath)))
    return out


def _config_dirs(trainer_cfg: Namespace) -> list[Path]:
    """Where ``config.yaml`` lands for loggers whose folder is not versioned, and without a logger."""
    dirs = [Path(str(trainer_cfg.get("default_root_dir") or "."))]
    loggers = trainer_cfg.get("logger")
    for lg in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(lg, Namespace) and not str(lg.get("class_path", "")).endswith(("CSVLogger", "TensorBoardLogger")):
            save_dir = (lg.get("init_args") or Namespace()).get("save_dir")
            if save_dir:
                dirs.append(Path(str(save_dir)))
    return dirs


class IpsbCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data (module docstring)."""

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check the run folder (before anything is built or seeded)."""
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "fit":
            self._check_run_folder(self.config["fit"])

    def _check_run_folder(self, cfg: Namespace) -> None:
        ckpt_path = cfg.get("ckpt_path")
        overwrite = bool(((cfg.get("model") or Namespace()).get("init_args") or Namespace()).get("overwrite"))
        ckpt_dirs = _checkpoint_dirs(cfg.trainer)
        if ckpt_path == "last" and not any(d.is_dir() and any(d.glob("*.ckpt")) for d in ckpt_dirs):
            where = ", ".join(f"'{d}'" for d in ckpt_dirs) or "(no ModelCheckpoint folder is configured)"
            raise ExistingRunError(f"--ckpt_path last: no checkpoint to resume from in {where}; "
                                   f"drop --ckpt_path to start a new run")
        mode = "resume" if ckpt_path else "overwrite" if overwrite else "new"
        model = cfg.get("model")
        stage = _stage_class(model) if isinstance(model, Namespace) and model.get("class_path") else None
        kinds = {"resumable": bool(ckpt_dirs),
                 "overwritable": stage is not None and "overwrite" in inspect.signature(stage).parameters}
        self.save_config_kwargs.update(mode=mode, **kinds)
        if mode != "new":
            return
        found = [f for d in ckpt_dirs if d.is_dir() for f in sorted(d.glob("*.ckpt"))]
        found += [d / "config.yaml" for d in _config_dirs(cfg.trainer) if (d / "config.yaml").is_file()]
        if found:
            raise ExistingRunError(existing_run_message(found[0].parent, found, **kinds))


def run(args: Optional[Sequence[str]]) -> IpsbCLI:
    """Parse ``args`` (None: ``sys.argv``) and run the Lightning subcommand."""
    return IpsbCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   parser_class=StageArgumentParser, save_config_callback=RunConfigSaver,
                   save_config_kwargs={"overwrite": False}, auto_configure_optimizers=False,
                   args=None if args is None else list(args))
