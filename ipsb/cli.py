"""The ``ipsb`` command: LightningCLI (``fit|validate|test|predict``) plus ipsb's own subcommands.

Lightning subcommands take ``--config lightning_configs/...yaml``; model and data are given as
``class_path``/``init_args`` (``subclass_mode``), so any LightningModule/DataModule can be selected
(:mod:`ipsb.lightning_cli`: allowlisted building, path rule, resume).
Extra subcommands (``demo``, ``swap``, ``toy-report``, ...) are registered in :data:`EXTRA_COMMANDS`
as ``"module:function"``; the function receives the remaining argv and returns an exit code.
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
    """Entry point of the ``ipsb`` console script and ``python -m ipsb``."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    if argv[0] in EXTRA_COMMANDS:
        module, func = EXTRA_COMMANDS[argv[0]][0].split(":")
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    from ipsb.lightning_cli import ExistingRunError, run

    try:
        run(None if from_sys else argv)
    except ExistingRunError as e:
        print(f"ipsb {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
