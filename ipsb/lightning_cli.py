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
* **A --ckpt_path file is read safely first** (:func:`check_ckpt_path`): a missing, empty, truncated,
  non-zip or pickled-object file, a file that is no Lightning checkpoint, or a checkpoint of another
  model than the config's, each ends in one line naming it, before Lightning merges its
  hyper-parameters (which go through the allowlist like any config value).
* **Outputs are checked before the compute** (:func:`planned_outputs`): every folder the run will
  write (checkpoint folders, ``default_root_dir`` and logger folders for ``fit``; a model's or
  callback's ``output_dir`` folder or ``output_path``/``output`` file) must be writable, and the
  checkpoint folders must have room for a checkpoint (estimated from the model's state).
* Errors are raised, not printed: the ``ipsb`` command's boundary reports them in one line
  (:mod:`ipsb.error_boundary`).
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ipsb.config_objects import plain, resolve_class


class ExistingRunError(FileExistsError):
    """``ipsb fit`` would write into a folder that holds an earlier run; the message says what to do."""


def _stage_class(model: Namespace) -> Optional[type]:
    """The module class a model spec names when it builds a backbone (a StageModule subclass, or a module
    that declares its ``backbone_components``, like the inversion); None for other LightningModules."""
    from ipsb.stages.base import StageModule

    cls = resolve_class(model.class_path, LightningModule, "model class_path")
    return cls if issubclass(cls, StageModule) or hasattr(cls, "backbone_components") else None


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
    """LightningCLI's parser; instantiating builds a stage's backbone with only the parts it uses.

    Parse errors are raised (``exit_on_error=False``), so the ``ipsb`` command's error boundary
    reports them in one line (:mod:`ipsb.error_boundary`) instead of a usage dump.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("exit_on_error", False)
        super().__init__(*args, **kwargs)

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


#: ``--ckpt_path`` values Lightning resolves itself (not file paths)
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
#: attributes through which a LightningModule or callback names what it writes: folder or file
OUTPUT_FOLDER_ATTRIBUTES = ("output_dir",)
OUTPUT_FILE_ATTRIBUTES = ("output_path", "output")
#: free space asked of any other output folder (tables, logs, config files)
MIN_FREE_BYTES = 1 << 20


def check_ckpt_path(path: str, model: Optional[Namespace], subcommand: str) -> Optional[dict]:
    """Read a ``--ckpt_path`` file safely (weights only) before Lightning does; one line if it is missing,
    unreadable, not a Lightning checkpoint, or one of another model than ``model`` (the config's spec).
    Returns the checkpoint (None for Lightning's special values and remote URLs)."""
    from ipsb.checkpoints import (STAGE_KEY, MissingCheckpointError, WrongCheckpointKindError, load_torch_file,
                                  names_class)

    path = str(path)
    if path in SPECIAL_CKPT_PATHS or path.startswith("registry:") or "://" in path:
        return None
    if not Path(path).is_file():
        what = "is a folder" if Path(path).is_dir() else "not found"
        raise MissingCheckpointError(f"--ckpt_path '{path}' {what}; give a checkpoint file"
                                     + (" (or 'last' to resume the run)" if subcommand == "fit" else ""))
    ckpt = load_torch_file(path, "the --ckpt_path checkpoint",
                           hint="Give a checkpoint that Lightning wrote (a run's checkpoints folder).")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise WrongCheckpointKindError(f"--ckpt_path '{path}' is not a Lightning checkpoint (no state_dict); "
                                       f"give a checkpoint that Lightning wrote (a run's checkpoints folder)")
    hparams = ckpt.get("hyper_parameters")
    found = ckpt.get(STAGE_KEY) or (hparams.get("_class_path") if isinstance(hparams, dict) else None)
    wanted = model.get("class_path") if isinstance(model, Namespace) else None
    if isinstance(found, str) and isinstance(wanted, str):
        cls = resolve_class(wanted, LightningModule, "model class_path")
        if not names_class(found, cls):
            raise WrongCheckpointKindError(
                f"--ckpt_path '{path}' is a {found.rsplit('.', 1)[-1]} checkpoint; this config's model is a "
                f"{cls.__name__} (give one of its checkpoints, or the config that trains a "
                f"{found.rsplit('.', 1)[-1]})")
    return ckpt


def checkpoint_bytes(model: Any) -> int:
    """Estimated size of one checkpoint of ``model``: its state (what a stage saves: no backbone)
    three times (weights and an Adam-like optimizer's two moments) plus 64 KiB of metadata."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        if hasattr(t, "untyped_storage") and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return 3 * total + (64 << 10)


def planned_outputs(trainer: Any, model: Any, subcommand: str) -> list[tuple[Path, int, str]]:
    """``[(folder, bytes needed, what)]``: the folders ``subcommand`` writes (module docstring)."""
    from lightning.pytorch.callbacks import Checkpoint

    plan: list[tuple[Path, int, str]] = []
    if subcommand == "fit":
        size = checkpoint_bytes(model)
        for cb in trainer.checkpoint_callbacks:
            folder = getattr(cb, "dirpath", None) or trainer.default_root_dir
            plan.append((Path(folder), 2 * size, "a checkpoint"))
        plan.append((Path(trainer.default_root_dir), MIN_FREE_BYTES, "the run's files"))
    for logger in trainer.loggers:            # the run's config.yaml and logs
        if getattr(logger, "save_dir", None):
            plan.append((Path(logger.save_dir), MIN_FREE_BYTES, "the logs"))
    for obj in [model, *[cb for cb in trainer.callbacks if not isinstance(cb, Checkpoint)]]:
        for attr in OUTPUT_FOLDER_ATTRIBUTES + OUTPUT_FILE_ATTRIBUTES:
            value = getattr(obj, attr, None)
            if isinstance(value, (str, os.PathLike)) and str(value):
                folder = Path(value) if attr in OUTPUT_FOLDER_ATTRIBUTES else Path(value).parent
                plan.append((folder, MIN_FREE_BYTES, f"{type(obj).__name__}.{attr}"))
    return plan


def check_outputs(trainer: Any, model: Any, subcommand: str) -> None:
    """Every planned output folder is writable and has room (:mod:`ipsb.data.output_plan`)."""
    from ipsb.data.output_plan import check_output_folder

    need: dict[Path, tuple[int, str]] = {}
    for folder, size, what in planned_outputs(trainer, model, subcommand):
        key = folder.absolute()
        old = need.get(key, (0, what))
        need[key] = (old[0] + size, old[1] if old[0] >= size else what)
    for folder, (size, what) in need.items():
        check_output_folder(folder, size, what)


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

    def _parse_ckpt_path(self) -> None:
        """Check the ``--ckpt_path`` file (:func:`check_ckpt_path`), then let Lightning merge its
        hyper-parameters into the config."""
        from ipsb.checkpoints import UnexpectedContentError
        from ipsb.config_objects import short_error

        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path:
            check_ckpt_path(path, self.config[subcommand].get("model"), subcommand)
        try:
            super()._parse_ckpt_path()
        except Exception as e:      # jsonargparse: a value the config's types or the allowlist refuse
            raise UnexpectedContentError(f"--ckpt_path '{path}': its hyper-parameters cannot be used: "
                                         f"{short_error(e)}") from e

    def before_fit(self) -> None:
        check_outputs(self.trainer, self.model, "fit")

    def before_validate(self) -> None:
        check_outputs(self.trainer, self.model, "validate")

    def before_test(self) -> None:
        check_outputs(self.trainer, self.model, "test")

    def before_predict(self) -> None:
        check_outputs(self.trainer, self.model, "predict")


def _unique_keys_loader():
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last
    silently, so a second ``callbacks:`` would drop the first list)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' appears twice in one mapping (lines {seen[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); YAML would keep only the last, so merge them",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config FILE`` (``-c``, ``--config=``) exists and is valid YAML without a key given twice
    in one mapping, else one :class:`~ipsb.config_objects.ConfigBuildError` naming it (jsonargparse's
    report does not)."""
    import yaml

    from ipsb.config_objects import ConfigBuildError

    args = list(args)
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg in ("--config", "-c") and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        if value.lstrip().startswith(("{", "[")) or "\n" in value:     # an inline YAML string, not a file
            continue
        path = Path(value)
        if not path.is_file():
            raise ConfigBuildError(f"--config '{value}' " + ("is a folder" if path.is_dir() else "not found")
                                   + "; give a YAML file (e.g. lightning_configs/toy/mapping.yaml)")
        try:
            yaml.load(path.read_text(), Loader=_unique_keys_loader())
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigBuildError(f"--config '{value}' is not valid YAML{at}: {problem}") from e


def run(args: Optional[Sequence[str]]) -> IpsbCLI:
    """Parse ``args`` (None: ``sys.argv``) and run the Lightning subcommand."""
    import sys

    check_config_files(sys.argv[1:] if args is None else args)
    return IpsbCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   parser_class=StageArgumentParser, save_config_callback=RunConfigSaver,
                   save_config_kwargs={"overwrite": False}, auto_configure_optimizers=False,
                   args=None if args is None else list(args))
