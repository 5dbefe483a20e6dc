"""The error boundary of the ``ipsb`` command: an expected failure ends in one line and exit code 2.

    ipsb <command>: error: <what is wrong, naming the file or option, and what to do>

Expected failures (:func:`explain` gives their line):

* ipsb's own error classes: checkpoint errors (:mod:`ipsb.checkpoints`: missing, corrupt, unsafe,
  wrong kind, write errors), :class:`~ipsb.config_objects.ConfigBuildError`,
  :class:`~ipsb.data.image_reader.ImageReadError`, :class:`~ipsb.data.output_plan.OutputPlanError`,
  :class:`~ipsb.lightning_cli.ExistingRunError`, ...;
* a ``ValueError`` or ``ImportError`` raised by ipsb's own code (its messages are written for users);
* file-system errors (``OSError``: a missing file, no permission, a read-only or full disk, a folder
  where a file was due), with the path and what to do;
* config errors: jsonargparse's parse errors, YAML errors and Lightning's
  ``MisconfigurationException``. When jsonargparse wraps a constructor's error (a union report of
  every type it tried), the constructor's own error is shown; otherwise the innermost line of the
  report (:func:`ipsb.config_objects.short_error`);
* running out of memory (``torch.OutOfMemoryError``), with what to lower.

Anything else is a bug (in ipsb or a library) and is not hidden: one line
``ipsb <command>: internal error: <type>: <message> (rerun with --debug ...)`` and exit code 1.

``--debug`` anywhere on the command line (removed before parsing) or ``IPSB_DEBUG=1`` prints the
full traceback before the line. ``SystemExit`` (argparse usage errors, ``--help``) and
``KeyboardInterrupt`` pass through unchanged.
"""
from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from typing import Callable, Optional, Sequence

#: exit code of an expected failure (bad input, config, file system), as argparse's usage errors
EXIT_ERROR = 2
#: exit code of an unexpected exception (a bug): Python's own for an uncaught exception
EXIT_INTERNAL = 1
DEBUG_FLAG = "--debug"
DEBUG_ENV = "IPSB_DEBUG"

#: what to do about an OSError, by errno
_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "free some space or choose another location",
    getattr(errno, "EDQUOT", errno.ENOSPC): "free some space or choose another location",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "move it away or choose another name",
}


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether tracebacks are wanted (the flag or ``IPSB_DEBUG=1``)."""
    args = [a for a in argv if a != DEBUG_FLAG]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return args, env or len(args) != len(argv)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def _raised_in(exc: BaseException) -> str:
    """Name of the module whose code raised ``exc`` (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", ""))


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _is_ipsb_error(exc: BaseException) -> bool:
    """An error ipsb raised for the user: its own class, or a ValueError/ImportError/OSError it raised."""
    if _in_package(type(exc).__module__, "ipsb"):
        return True
    return isinstance(exc, (ValueError, ImportError, OSError)) and _in_package(_raised_in(exc), "ipsb")


def _is_config_error(exc: BaseException) -> bool:
    """A parse or configuration error reported by jsonargparse or Lightning."""
    from argparse import ArgumentError

    return (isinstance(exc, ArgumentError) or type(exc).__name__ == "MisconfigurationException"
            or any(_in_package(type(exc).__module__, p) or _in_package(_raised_in(exc), p)
                   for p in ("jsonargparse", "yaml")))


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _os_message(exc: OSError) -> str:
    """``'<path>': <reason>; <what to do>`` for a plain OSError."""
    if exc.errno is None:                               # OSError("message"): a message of its own
        return _one_line(exc) or type(exc).__name__
    reason = (exc.strerror or _one_line(exc) or type(exc).__name__)
    reason = reason[0].lower() + reason[1:]
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(f"'{os.fsdecode(p)}'" for p in paths)
    hint = _OS_HINTS.get(exc.errno)
    return (f"{where}: " if where else "") + reason + (f"; {hint}" if hint else "")


def _message(exc: BaseException) -> str:
    from ipsb.config_objects import short_error

    if isinstance(exc, OSError) and not _in_package(type(exc).__module__, "ipsb"):
        return _os_message(exc)
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return _one_line(exc.strerror)                   # OSError(errno, message): str() prefixes [Errno N]
    if isinstance(exc, (FileNotFoundError, KeyError)) and len(exc.args) == 1:
        return _one_line(exc.args[0])
    if not _in_package(type(exc).__module__, "ipsb") and _is_config_error(exc):
        return short_error(exc)
    return _one_line(exc) or type(exc).__name__


def explain(exc: BaseException) -> Optional[str]:
    """The one-line message for an expected failure (module docstring), or None for a bug.

    The chain of causes is searched outermost first for an error ipsb raised (so its own message,
    which names the file, wins over a wrapper's report); failing that, a file-system or config
    error is shown, unless the innermost cause is of another kind (then it is a bug).
    """
    chain = _chain(exc)
    for e in chain:
        if _is_ipsb_error(e):
            return _message(e)
    oom = next((e for e in chain if type(e).__name__ == "OutOfMemoryError"), None)
    if oom is not None:                # a resource limit, not a bug
        first = _one_line(str(oom).split("\n", 1)[0])[:200]
        return (f"out of memory ({first}); lower the batch size (--data.init_args.batch_size) or use a "
                f"device with more memory")
    if not (isinstance(chain[-1], OSError) or _is_config_error(chain[-1])):
        return None
    for i, e in enumerate(chain):
        if isinstance(e, OSError) or _is_config_error(e):
            return _config_file_error(chain[i:]) or _message(e)
    return None


_LOOP = re.compile(r"Config file loop detected: (.+?) -> ")


def _config_file_error(chain: list[BaseException]) -> Optional[str]:
    """jsonargparse reports an error inside a config file named by an option (``--model.init_args.backbone
    evil.yaml``) as "Config file loop detected" (it reads the file again while handling the error);
    the error it was handling says what is wrong. -> ``<keys> '<file>': <that error>``, else None."""
    from ipsb.config_objects import short_error

    texts = [short_error(e) if _is_config_error(e) else "" for e in chain]
    loop = next((i for i, t in enumerate(texts) if _LOOP.search(t)), None)
    if loop is None:
        return None
    cause = next((t for t in texts[loop:] if t and not _LOOP.search(t)), None)
    if cause is None:
        return None
    where, _, _ = texts[loop].partition("Config file loop detected")
    return f"{where.rstrip(': ')} '{_LOOP.search(texts[loop]).group(1)}': {cause}".lstrip()


def report(command: str, exc: BaseException, debug: bool = False, stream=None) -> int:
    """Write ``exc`` as one line for ``ipsb <command>`` (the traceback first if ``debug``); the exit code."""
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(exc, file=stream)
    line = explain(exc)
    if line is not None:
        print(f"ipsb {command}: error: {line}", file=stream)
        return EXIT_ERROR
    first = _one_line(str(exc).split("\n", 1)[0])[:300]
    hint = "" if debug else " rerun with --debug for the traceback and"
    print(f"ipsb {command}: internal error: {type(exc).__name__}: {first} (a bug;{hint} please report it)",
          file=stream)
    return EXIT_INTERNAL


def guarded(command: str, fn: Callable[[], Optional[int]], debug: bool = False) -> int:
    """Run ``fn()`` (a command's body) inside the boundary; its return value (None -> 0) or the exit
    code :func:`report` gives."""
    try:
        return int(fn() or 0)
    except Exception as exc:   # noqa: BLE001 -- the boundary: every exception ends in one line
        return report(command, exc, debug)
