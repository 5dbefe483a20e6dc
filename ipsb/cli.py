"""The ``ipsb`` command: LightningCLI (``fit|validate|test|predict``) plus ipsb's own subcommands.

Lightning subcommands take ``--config lightning_configs/...yaml``; model and data are given as
``class_path``/``init_args`` (``subclass_mode``), so any LightningModule/DataModule can be selected
(:mod:`ipsb.lightning_cli`: allowlisted building, path rule, resume).
Extra subcommands (``demo``, ``swap``, ``toy-report``, ...) are registered in :data:`EXTRA_COMMANDS`
as ``"module:function"``; the function receives the remaining argv and returns an exit code, and
raises on an error. Every command runs inside one error boundary (:mod:`ipsb.error_boundary`):
one line ``ipsb <command>: error: ...`` on stderr and exit code 2, or ``internal error`` and exit
code 1 for a bug; ``--debug`` anywhere on the command line or ``IPSB_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

#: name -> ("module:function", one-line help). The function takes ``argv: list[str]``.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "toy-report": ("ipsb.backbone.toy.report:main", "accuracy of the toy world's trained networks"),
    "align": ("ipsb.data.align_cli:main", "FFHQ-align photos with dlib (crop + matrix to paste back)"),
    "swap": ("ipsb.swap_cli:main", "swap the face of a source photo onto a photo, a video or a folder"),
    "demo": ("ipsb.demo:main", "the whole method on the toy world: shipped stages (or --train), grid + FF++-style table"),
    "edit": ("ipsb.editing.cli:main", "edit a face along the StyleIPSB basis or set its 3DMM coefficients"),
}

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _print_help() -> None:
    print("usage: ipsb {fit,validate,test,predict," + ",".join(EXTRA_COMMANDS) + "} ...\n")
    print("Lightning subcommands (ipsb fit --config lightning_configs/toy/mapping.yaml):")
    for c in LIGHTNING_COMMANDS:
        print(f"  {c:<12} Lightning's {c} loop (see `ipsb {c} --help`)")
    if EXTRA_COMMANDS:
        print("\nipsb subcommands:")
        for name, (_, text) in EXTRA_COMMANDS.items():
            print(f"  {name:<12} {text}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ipsb`` console script and ``python -m ipsb``.

    Every command runs inside one error boundary (:mod:`ipsb.error_boundary`): an expected failure
    ends in one line ``ipsb <command>: error: ...`` on stderr and exit code 2, a bug in one
    ``internal error`` line and exit code 1; ``--debug`` anywhere on the command line (or
    ``IPSB_DEBUG=1``) adds the traceback. argparse's usage errors and ``--help`` are unchanged.
    """
    from ipsb.error_boundary import guarded, split_debug

    from_sys = argv is None
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    command = argv[0]
    if command in EXTRA_COMMANDS:
        module, func = EXTRA_COMMANDS[command][0].split(":")
        return guarded(command, lambda: getattr(importlib.import_module(module), func)(argv[1:]), debug)
    if from_sys:                       # LightningCLI reads sys.argv itself: without --debug
        sys.argv[1:] = argv

    def lightning() -> int:
        from ipsb.lightning_cli import run

        run(None if from_sys else argv)
        return 0

    return guarded(command, lightning, debug)


if __name__ == "__main__":
    sys.exit(main())
