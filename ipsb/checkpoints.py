"""Registry of the official checkpoint files ipsb uses, and name -> path resolution.

Files live in ``$IPSB_CHECKPOINTS`` (default: the repository's ``checkpoints/`` folder, then
``./checkpoints``). Nothing is ever downloaded: a missing file raises :class:`MissingCheckpointError`
naming the file, what it is and where to get it (see ``checkpoints/README.md``).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ENV_VAR = "IPSB_CHECKPOINTS"
REPO_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


@dataclass(frozen=True)
class CheckpointInfo:
    """One official file: expected name, what it is, where it comes from, sha256 if published.

    ``read_by``: the shipped configs (paths under ``lightning_configs/``) that read it; stage configs
    read the files of the backbone config they name. ``selected_by``: for an optional alternative that
    no shipped config reads, the config line that selects it instead of the default.
    """

    name: str
    what: str
    source: str
    sha256: Optional[str] = None
    read_by: tuple[str, ...] = ()
    selected_by: Optional[str] = None


#: The registry's data file (package data): one entry per file, fields as :class:`CheckpointInfo`.
REGISTRY_FILE = Path(__file__).resolve().parent / "assets" / "checkpoint_registry.yaml"


def read_registry(path: str | os.PathLike = REGISTRY_FILE) -> dict[str, CheckpointInfo]:
    """``{file name: CheckpointInfo}`` from the registry's YAML list (plain data, ``yaml.safe_load``)."""
    import yaml

    entries = yaml.safe_load(Path(path).read_text())
    return {e["name"]: CheckpointInfo(**{**e, "read_by": tuple(e.get("read_by", ()))}) for e in entries}


#: Every file a shipped config reads, then the optional alternatives (``checkpoints/README.md``).
REGISTRY: dict[str, CheckpointInfo] = read_registry()


class MissingCheckpointError(FileNotFoundError):
    """A checkpoint file is not on disk; the message says what it is and where to get it."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read, or holds something other than expected."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, read-only folder); the message names the folder."""


class UnsafeCheckpointError(CorruptCheckpointError):
    """A checkpoint holds pickled Python objects, which a safe (``weights_only``) load refuses."""


class UnexpectedContentError(CorruptCheckpointError, ValueError):
    """A readable file that holds something other than what was asked for (wrong shape, wrong
    entries, hyper-parameters that cannot be built)."""


class WrongCheckpointKindError(UnexpectedContentError):
    """A checkpoint of another kind than expected: a stage checkpoint of another stage (a DetailModule
    one where a MappingModule one is needed), or a file of another kind altogether (a Lightning
    checkpoint given as a generator); the message says what the file is (:func:`describe_contents`)."""


def search_dirs() -> list[Path]:
    """Folders searched for checkpoint files, in order."""
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs += [REPO_CHECKPOINTS, Path.cwd() / "checkpoints"]
    seen, out = set(), []
    for d in dirs:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A registry name (or an explicit path) -> an existing file path, or MissingCheckpointError."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    name = p.name
    for d in search_dirs():
        if (d / name).is_file():
            return d / name
    info = REGISTRY.get(name)
    where = ", ".join(str(d) for d in search_dirs())
    if info is None:
        raise MissingCheckpointError(
            f"checkpoint file '{name_or_path}' not found (looked in: {where}); set ${ENV_VAR} to the "
            f"folder that holds it or pass an existing path")
    raise MissingCheckpointError(
        f"checkpoint file '{name}' not found (looked in: {where}). It is the {info.what}; get it from "
        f"{info.source}, put it in one of those folders or point ${ENV_VAR} at its folder. "
        f"See checkpoints/README.md.")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: first bytes of a file written by ``torch.save(..., _use_new_zipfile_serialization=False)`` (the
#: format of checkpoints from before PyTorch 1.6, e.g. HopeNet's): a pickled magic number
LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_HEADER = b"PK\x03\x04"


def _global_exists(dotted: str) -> bool:
    """Whether a pickle's ``GLOBAL module.name`` may name something real. Nothing is imported to find
    out: a module that is not imported counts as real unless it is the cut-off start of one that is
    (``coll`` of ``collections``). A truncated pickle names cut-off globals."""
    import sys

    module, _, name = dotted.rpartition(".")
    if not name or not module:
        return False
    mod = sys.modules.get(module)
    if mod is None:
        return not any(m.startswith(module) for m in sys.modules)
    return hasattr(mod, name)


def unreadable_reason(path: str | os.PathLike, error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` could not read ``path``, in a few words: empty, truncated
    or damaged (zip archive or PyTorch's legacy format), not a PyTorch file, or pickled objects."""
    import re

    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(len(LEGACY_TORCH_HEADER))
    except OSError as e:
        return f"it cannot be opened ({e.strerror or e})"
    if size == 0:
        return "it is empty (0 bytes)"
    text = str(error)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(error).__name__)
    is_zip, is_legacy = (head.startswith(h) or (size < len(h) and h.startswith(head))
                         for h in (ZIP_HEADER, LEGACY_TORCH_HEADER))
    damaged = f"it is truncated or damaged ({size} bytes"
    if is_zip and not zipfile.is_zipfile(p):
        return damaged + "; the zip archive has no end record)"
    if "Weights only load failed" in text:
        named = re.search(r"GLOBAL ([\w.]+)", text)
        if named and (is_zip or is_legacy) and not _global_exists(named.group(1)):
            return damaged + f"; it names '{named.group(1)}', which does not exist)"
        pickle = is_zip or is_legacy or head[:1] == b"\x80"     # protocol >= 2 pickles start with PROTO
        if pickle and (named or "Unsupported operand" in text):
            return ("it holds pickled Python objects, which ipsb never unpickles (a safe weights-only load "
                    "refused them)")
    if is_legacy:
        return damaged + f" in PyTorch's legacy format: {type(error).__name__}: {first})"
    if not is_zip:
        return "it is not a PyTorch checkpoint (neither a zip archive nor PyTorch's legacy format)"
    return f"it is damaged ({type(error).__name__}: {first})"


def _unreadable(path, what: str, error: BaseException, hint: str) -> CorruptCheckpointError:
    reason = unreadable_reason(path, error)
    cls = UnsafeCheckpointError if reason.startswith("it holds pickled") else CorruptCheckpointError
    return cls(f"could not read {what} from '{path}': {reason}. {hint}")


def load_torch_file(path: str | os.PathLike, what: str, weights_only: bool = True,
                    hint: str = "Download or create it again (checkpoints/README.md)."):
    """``torch.load`` on CPU with a clear error for a missing, empty, truncated or unsafe file
    (``hint``: what to do about an unreadable one)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError as e:
        raise MissingCheckpointError(f"{what} file '{path}' not found") from e
    except Exception as e:  # zip/pickle errors come in many types
        raise _unreadable(path, what, e, hint) from e


def describe_contents(obj) -> str:
    """What a loaded checkpoint holds, in a few words, for "wrong kind" messages: an ipsb stage
    checkpoint (and which stage), a Lightning checkpoint, an ipsb basis, W+ codes, a rosinality
    generator, an e4e/pSp checkpoint, a Deep3D checkpoint, a state dict, or else its type / keys."""
    import torch

    if torch.is_tensor(obj):
        return f"a bare tensor of shape {list(obj.shape)}"
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}"
    hparams = obj.get("hyper_parameters")
    stage = obj.get(STAGE_KEY) or (hparams.get("_class_path") if isinstance(hparams, dict) else None)
    if isinstance(stage, str):
        return f"an ipsb {stage.rsplit('.', 1)[-1]} checkpoint (Lightning)"
    if "pytorch-lightning_version" in obj or {"state_dict", "epoch", "global_step"} <= set(obj):
        return "a Lightning training checkpoint"
    if obj.get("kind") == "ipsb.basis":
        return "an ipsb basis file"
    if "wplus" in obj:
        return "a W+ code file"
    if "g_ema" in obj:
        return "a rosinality StyleGAN2 checkpoint (g_ema)"
    if "opts" in obj and isinstance(obj.get("state_dict"), dict):
        return "an e4e/pSp checkpoint (state_dict + opts)"
    if "net_recon" in obj:
        return "a Deep3DFaceRecon checkpoint (net_recon)"
    keys = [str(k) for k in list(obj)[:4]] + (["..."] if len(obj) > 4 else [])
    if obj and all(torch.is_tensor(v) for v in obj.values()):
        return f"a state dict of {len(obj)} tensor{'s' if len(obj) > 1 else ''} ({', '.join(keys)})"
    return f"a dict with keys {', '.join(keys) or '(none)'}"


def foreign_kind(obj) -> Optional[str]:
    """:func:`describe_contents` when ``obj`` is a file of a kind ipsb knows (a stage, Lightning,
    basis, W+, generator, e4e or Deep3D file), else None (a plain or wrapped state dict)."""
    if not isinstance(obj, dict):
        return None
    what = describe_contents(obj)
    return None if what.startswith(("a state dict", "a dict with keys")) else what


def load_mat_file(path: str | os.PathLike, what: str,
                  hint: str = "Download or create it again (checkpoints/README.md).") -> dict:
    """``scipy.io.loadmat`` with a clear error for a missing, empty, truncated or non-MATLAB file
    (MATLAB files hold arrays only: reading one runs no code)."""
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise MissingCheckpointError(f"{what} file '{path}' not found. {hint}")
    try:
        return scipy.io.loadmat(str(p))
    except Exception as e:   # scipy raises several types for a damaged file
        with open(p, "rb") as f:
            head = f.read(len(LEGACY_TORCH_HEADER))
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        if not head:
            reason = "it is empty (0 bytes)"
        elif head.startswith((ZIP_HEADER, LEGACY_TORCH_HEADER)):
            reason = "it is a PyTorch checkpoint, not a MATLAB .mat file"
        elif head.startswith(b"\x89HDF"):
            reason = "it is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it again with -v7"
        elif head.startswith(b"MATLAB"):
            reason = f"it is truncated or damaged ({p.stat().st_size} bytes; {type(e).__name__}: {first})"
        else:
            reason = f"it is not a MATLAB .mat file ({type(e).__name__}: {first})"
        raise CorruptCheckpointError(f"could not read {what} from '{path}': {reason}. {hint}") from e


# ---------------------------------------------------------------------------------------------- stages
#: Entry of an ipsb stage checkpoint naming the stage class that wrote it (``module.ClassName``).
STAGE_KEY = "ipsb_stage"


def read_stage_checkpoint(path: str | os.PathLike, stage_cls: type, role: Optional[str] = None) -> dict:
    """Read an ipsb stage checkpoint written by ``stage_cls`` (weights-only), or say in one line why not.

    Missing -> :class:`MissingCheckpointError`; empty, truncated, not a zip ->
    :class:`CorruptCheckpointError`; pickled objects -> :class:`UnsafeCheckpointError`; another
    stage's checkpoint or no stage checkpoint at all -> :class:`WrongCheckpointKindError`.
    ``role`` names who asked (e.g. ``"--mapping"``).
    """
    label = getattr(stage_cls, "checkpoint_label", stage_cls.__name__)
    hint = getattr(stage_cls, "train_hint", "")
    p = Path(path)
    if not p.is_file():
        raise MissingCheckpointError(f"{label} checkpoint '{path}' not found"
                                     + (f"; train one with `{hint}`" if hint else ""))
    who = role or f"a {label} checkpoint"
    ckpt = load_torch_file(p, f"the {label} checkpoint", weights_only=True,
                           hint="Train it again" + (f" with `{hint}`." if hint else "."))
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise WrongCheckpointKindError(f"'{path}' is not a Lightning stage checkpoint (no state_dict); {who} "
                                       f"expects a {stage_cls.__name__} checkpoint")
    found = ckpt.get(STAGE_KEY) or (ckpt.get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(found, str):
        raise WrongCheckpointKindError(f"'{path}' is not an ipsb stage checkpoint (it does not say which stage "
                                       f"wrote it); {who} expects a {stage_cls.__name__} one")
    if not names_class(found, stage_cls):
        raise WrongCheckpointKindError(f"'{path}' is a {found.rsplit('.', 1)[-1]} checkpoint; {who} expects a "
                                       f"{stage_cls.__name__} one")
    return ckpt


def names_class(class_path: str, cls: type) -> bool:
    """Whether ``class_path`` names ``cls`` or an already imported subclass (nothing is imported)."""
    import sys

    if class_path == f"{cls.__module__}.{cls.__qualname__}":
        return True
    module, _, name = class_path.rpartition(".")
    target = getattr(sys.modules.get(module), name, None)
    return isinstance(target, type) and issubclass(target, cls)


def files_beside(path: str | os.PathLike, ckpt: dict, stage_cls: type) -> dict[str, str]:
    """The input files a stage checkpoint names by a relative path (``stage_cls.input_files``: another
    stage's checkpoint, a basis) that the working directory does not have but the checkpoint's own
    folder does: ``{argument: path next to the checkpoint}``.

    Relative paths resolve against the working directory (docs/architecture.md, paths); this fallback
    lets a folder of stage checkpoints that name each other by file name (the shipped toy stages,
    ``python -m ipsb.training.toy_stages``) be moved or installed as a whole.
    """
    hparams = ckpt.get("hyper_parameters") or {}
    found = {}
    for name in getattr(stage_cls, "input_files", ()):
        value = hparams.get(name)
        if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists():
            beside = Path(path).parent / value
            if beside.is_file():
                found[name] = str(beside)
    return found


def load_stage_checkpoint(path: str | os.PathLike, stage_cls: type, role: Optional[str] = None, **kwargs):
    """``stage_cls.load_from_checkpoint(path, **kwargs)`` on CPU, with every way the file can be wrong
    named in one line (:func:`read_stage_checkpoint`, plus hyper-parameters that cannot be built and
    weights that do not fit the stage -> :class:`UnexpectedContentError` / :class:`CorruptCheckpointError`).
    The one loader of stage checkpoints (``load_mapping_stage``, ``load_detail_stage``,
    ``FaceSwapper.from_checkpoints``). Input files named relative to the checkpoint's folder are
    found there (:func:`files_beside`); ``kwargs`` take precedence.
    """
    from argparse import ArgumentError

    from ipsb.config_objects import ConfigBuildError, short_error

    kwargs = {**files_beside(path, read_stage_checkpoint(path, stage_cls, role), stage_cls), **kwargs}
    try:
        return stage_cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True, **kwargs)
    except (ConfigBuildError, ArgumentError) as e:   # ipsb's builder, or Lightning's instantiator (jsonargparse)
        raise UnexpectedContentError(f"'{path}': its hyper-parameters cannot be built: {short_error(e)}") from e
    except (KeyError, TypeError, RuntimeError) as e:
        if isinstance(e, CorruptCheckpointError):
            raise
        raise CorruptCheckpointError(f"'{path}' is not a readable {stage_cls.__name__} checkpoint: "
                                     f"{type(e).__name__}: {e}") from e
