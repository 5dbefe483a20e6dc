"""Objects built from config: the one way ipsb turns ``{class_path, init_args}`` into objects.

Every object that a YAML file, a command line or a checkpoint's hyper-parameters name -- backbone
components, metric networks, swap methods, stages, optimizers, schedulers, callbacks, loggers -- is
resolved by jsonargparse's typed resolution (the same machinery LightningCLI uses), under one policy
that is installed when :mod:`ipsb` is imported:

* **Allowlist before import.** A ``class_path`` (or any import path given as a value) must lie in
  one of :data:`ALLOWED_PACKAGES`; anything else is refused before its module is imported
  (jsonargparse's import-path policy: every path denied except the allowed packages).
* **Type before call.** The resolved object must be a subclass of the parameter's annotated type, or
  a function whose *declared* return type is (``load_rosinality -> StyleGAN2Generator`` for a
  ``Generator`` parameter); both are checked before anything is called.
* **Checkpoints are data.** Hyper-parameters read back from a checkpoint go through the same
  resolution, so a ``class_path: os.system`` there is refused like one in a YAML file.

Functions: :func:`build` (spec -> object), :func:`validate` (spec -> normalized spec, nothing built),
:func:`resolve_class` (import path -> class), :func:`build_components` (several components, every
missing checkpoint file named at once), :func:`callable_spec` (an optimizer/scheduler value -> a
storable spec), :func:`read_mapping` (a dict or the YAML file holding one). Errors are
:class:`ConfigBuildError` with a one-line message naming what failed.

Extending the allowlist is a decision of whoever runs the code, never of a file: call
:func:`allow_packages` or set ``$IPSB_ALLOWED_PACKAGES`` (comma-separated packages). The policy is
jsonargparse's global setting, so it also applies to other jsonargparse users in the same process;
they extend it the same way (or with ``jsonargparse.set_parsing_settings(import_path_allowlist=...)``).
See ``docs/architecture.md`` ("Building objects from config").
"""
from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from jsonargparse import ArgumentParser, Namespace, set_parsing_settings

#: Packages whose classes and functions a config value may name.
ALLOWED_PACKAGES: tuple[str, ...] = ("ipsb", "lightning.pytorch.callbacks", "lightning.pytorch.loggers",
                                     "torch.optim")
ENV_VAR = "IPSB_ALLOWED_PACKAGES"
_allowed: set[str] = set()


class ConfigBuildError(ValueError):
    """A config names something it may not, or something that does not fit where it is used."""


def allow_packages(*packages: str) -> None:
    """Let config values name classes and functions of ``packages`` too (a decision in code)."""
    new = [p.strip() for p in packages if p and p.strip() and p.strip() not in _allowed]
    if new:
        set_parsing_settings(import_path_allowlist=new)
        _allowed.update(new)


def install_policy() -> None:
    """Deny every import path a value names except :data:`ALLOWED_PACKAGES` (and ``$IPSB_ALLOWED_PACKAGES``).

    Also keeps ``Any``-typed values as plain specs instead of building them (jsonargparse's future
    default), so only typed parameters ever build objects, and checks a spec kept as a plain value
    (``Any``, ``dict``) like any other: its class path must be allowed (it is built later, by
    :func:`build`, against the type it is used as).
    """
    set_parsing_settings(import_path_denylist=["*"], instantiate_subclass_spec_in_any=False,
                         validate_subclass_spec_in_any=True)
    allow_packages(*ALLOWED_PACKAGES, *os.environ.get(ENV_VAR, "").split(","))


install_policy()


# ---------------------------------------------------------------------------------------------- specs
def plain(obj: Any) -> Any:
    """jsonargparse Namespaces, Mappings, tuples and paths -> plain dicts, lists and strings (recursively)."""
    if isinstance(obj, Namespace):
        obj = obj.clone(with_meta=False).as_dict()
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items() if not str(k).startswith("__")}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def read_mapping(config: Union[str, os.PathLike, Mapping], what: str) -> dict:
    """A mapping, or the path of a YAML file holding one -> a plain dict (clear error otherwise)."""
    if isinstance(config, (str, os.PathLike)):
        import yaml

        p = Path(config)
        if not p.is_file():
            raise ValueError(f"{what} file '{p}' not found")
        try:
            config = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigBuildError(f"{what} file '{p}' is not valid YAML: {e}") from e
    config = plain(config)
    if not isinstance(config, dict):
        raise ConfigBuildError(f"a {what} must be a mapping, got {type(config).__name__}")
    return config


_NOISE = ("Errors:", "Subtypes:", "Given value", "Does not validate against any of the",
          "Problem with given class_path")
_EXPECTED = "Expected a <class"
_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS = re.compile(r"Problem with given class_path '([^']+)'")
_UNKNOWN = re.compile(r"(?:Option|Key) '([^'.]+)[^']*' is not accepted|No action for key \"?'?([^'\".]+)")


def short_error(error: BaseException) -> str:
    """One line out of a nested jsonargparse report: where (the keys) and the innermost problem.

    jsonargparse reports a value that fits none of a union's types with one indented block per type
    it tried; the deepest line is the real problem (the others say "Expected a <class ...>"). The
    keys and classes above it say where. An unknown argument is named with the ones the class takes;
    a refused import path with the allowlist.
    """
    lines = []
    for ln in str(error).splitlines():
        if not ln.strip():
            continue
        indent, text = len(ln) - len(ln.lstrip()), ln.strip()
        key = _KEY.match(text.lstrip("- "))
        rest = text.lstrip("- ")[key.end():].lstrip(": ") if key else ""
        if rest:                                   # 'Parser key "config": File does not exist: ...'
            lines += [(indent, f'Parser key "{key.group(1)}":'), (indent + 2, rest)]
        else:
            lines.append((indent, text))
    bodies = [text[2:] if text.startswith("- ") else text for _, text in lines]
    best = None
    for weak in (False, True):          # "Expected a <class ...>" only when nothing else is said
        for i, body in enumerate(bodies):
            if _KEY.match(body) or body.startswith(_NOISE) or body.startswith(_EXPECTED) != weak:
                continue
            if best is None or lines[i][0] > lines[best][0]:
                best = i
        if best is not None:
            break
    if best is None:
        return type(error).__name__
    keys: list[str] = []
    classes: list[str] = []
    depth = lines[best][0]
    for (indent, _), body in zip(reversed(lines[:best]), reversed(bodies[:best])):
        if indent >= depth:
            continue
        depth = indent
        key, cls = _KEY.match(body), _CLASS.match(body)
        if key and key.group(1) != "value":
            keys.insert(0, key.group(1))
        if cls:
            classes.insert(0, cls.group(1))
    line = bodies[best]
    denied = re.search(r"Importing '([^']+)' is not allowed", line)
    unknown = _UNKNOWN.search(line)
    if denied:
        line = (f"'{denied.group(1)}' is outside the packages a config may name ({', '.join(sorted(_allowed))}); "
                f"nothing was imported (trusted packages can be added with ${ENV_VAR})")
    elif unknown and classes:
        line = _unknown_argument(unknown.group(1) or unknown.group(2), classes[-1]) or line
    return (".".join(keys) + ": " if keys else "") + line


def _unknown_argument(name: str, class_path: str) -> Optional[str]:
    """``unknown argument 'genrator' of FaceBackbone; expected one of ...`` for an already imported class."""
    import sys

    module, _, attr = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), attr, None)     # jsonargparse imported it (nothing new is)
    if not callable(cls):
        return None
    try:
        params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return None
    close = difflib.get_close_matches(name, params, n=1)
    return (f"unknown argument '{name}' of {attr}" + (f" (did you mean '{close[0]}'?)" if close else "")
            + f"; expected one of: {', '.join(params)}")


def _parser(expected: Any) -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=expected, required=True)
    return parser


def _type_name(expected: Any) -> str:
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")


def _parse(spec: Any, expected: Any, what: str) -> Namespace:
    if isinstance(spec, Mapping):
        spec = plain(spec)
    try:
        return _parser(expected).parse_object({"value": spec})
    except Exception as e:   # jsonargparse reports bad paths, types and values as several exception types
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        detail = short_error(e)
        if isinstance(root, (ImportError, AttributeError)) and "outside the packages" not in detail:
            detail = f"cannot import {_class_paths(spec) or 'the named class'}: {detail}"
        raise ConfigBuildError(f"{what}: {detail} (expected {_type_name(expected)})") from e


def _class_paths(spec: Any) -> str:
    """The class paths a spec names, for error messages."""
    found: list[str] = []

    def walk(x):
        if isinstance(x, Mapping):
            if isinstance(x.get("class_path"), str):
                found.append(repr(x["class_path"]))
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
    walk(spec if not isinstance(spec, str) else {"class_path": spec})
    return ", ".join(found)


def validate(spec: Any, expected: Any, what: str = "config") -> dict:
    """Check ``spec`` against the type ``expected`` (allowlist, classes, argument names and types);
    returns the normalized spec (defaults filled in) as plain data. Nothing is built."""
    import yaml

    ns = _parse(spec, expected, what)
    return yaml.safe_load(_parser(expected).dump(ns, skip_none=False))["value"]


def build(spec: Any, expected: Any, what: str = "config") -> Any:
    """Build the object ``spec`` describes as a value of type ``expected`` (see the module docstring).

    ``spec``: ``{"class_path": ..., "init_args": {...}}`` (nested specs are built too) or an import
    path. Errors from the constructors themselves (a missing
    checkpoint file, a bad value) propagate unchanged.
    """
    expected = _required(expected) if spec is not None else expected
    ns = _parse(spec, expected, what)
    return _parser(expected).instantiate(ns).value


def _required(hint: Any) -> Any:
    """``Optional[X]`` / ``Union[dict, X]`` -> ``X``: the type a spec is built as (and a constructor's
    own error is not wrapped in a union report)."""
    if typing.get_origin(hint) is Union:
        args = [a for a in typing.get_args(hint) if a not in (type(None), dict, Mapping)
                and typing.get_origin(a) not in (dict, Mapping)]
        if len(args) == 1:
            return args[0]
    return hint


def resolve_class(class_path: str, base: type, what: str = "class_path") -> type:
    """An import path -> the class it names, which must be ``base`` or a subclass (allowlist first)."""
    return build(class_path, type[base], what)


def build_components(specs: Mapping[str, Any], owner: type, what: str,
                     names: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Build ``{name: spec}`` as the arguments of ``owner.__init__`` (each against its annotation).

    Only ``names`` are built (default: all); ``None`` specs are skipped. Every missing checkpoint file
    is collected, so one :class:`~ipsb.checkpoints.MissingCheckpointError` names them all.
    """
    from ipsb.checkpoints import MissingCheckpointError

    hints = typing.get_type_hints(owner.__init__)
    unknown = sorted(set(specs) - set(hints))
    if unknown:
        raise ConfigBuildError(f"unknown {what} entries {unknown}; expected some of "
                               f"{[n for n in inspect.signature(owner).parameters]}")
    built, missing = {}, []
    for name, spec in specs.items():
        if spec is None or (names is not None and name not in names):
            continue
        try:
            built[name] = build(spec, hints[name], f"{what} '{name}'")
        except MissingCheckpointError as e:
            missing.append(f"[{name}] {e}")
    if missing:
        raise MissingCheckpointError(f"cannot build the {what}, checkpoint files missing:\n  " + "\n  ".join(missing))
    return built


# ---------------------------------------------------------------------------------------------- callables
def import_path(obj: Any) -> str:
    """``module.QualName`` of a class or function (how a spec names it)."""
    return f"{obj.__module__}.{obj.__qualname__}"


def callable_spec(value: Any, expected: Any, what: str) -> Optional[dict]:
    """An optimizer/scheduler value -> a storable, validated ``{"class_path", "init_args"}`` spec.

    Accepts such a spec (a Mapping), an import path, a class, or a ``functools.partial`` of a class
    with keyword arguments (what jsonargparse builds from a spec, and what Python callers write).
    Anything else cannot be stored in a checkpoint and is refused. ``None`` stays ``None``.
    """
    if value is None:
        return None
    if isinstance(value, functools.partial):
        cls = next((a for a in reversed((value.func,) + tuple(value.args)) if inspect.isclass(a)), None)
        if cls is None:
            raise ConfigBuildError(f"{what}: a partial must wrap a class, got {value!r}")
        value = {"class_path": import_path(cls), "init_args": dict(value.keywords)}
    elif inspect.isclass(value):
        value = {"class_path": import_path(value)}
    elif not isinstance(value, (str, Mapping)):
        raise ConfigBuildError(f"{what} must be a class, a functools.partial of a class or a "
                               f"{{class_path, init_args}} spec (so checkpoints can store it), got {value!r}")
    return validate(value, expected, what)
