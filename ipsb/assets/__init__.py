"""Files that ship with ipsb, found the same way in a source checkout and in an installed wheel.

* the toy world's network weights (``ipsb/assets/toy/*.pt``, read by :mod:`ipsb.backbone.toy.networks`);
* the trained toy stages (``ipsb/assets/toy/stages/``: the basis and the stage 1-3 checkpoints that
  ``ipsb demo``, ``ipsb swap`` and ``ipsb edit`` use on the toy world; made by
  ``python -m ipsb.training.toy_stages``, see ``ipsb/assets/toy/stages/README.md``):
  :func:`toy_stage_path`;
* the shipped configs (``lightning_configs/`` at the repository root, installed as the package data
  ``ipsb/lightning_configs/``): :func:`config_path`.
"""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
PACKAGE = ASSETS.parent
TOY_STAGES = ASSETS / "toy" / "stages"

#: Stage name -> file name of the shipped toy stages, in training order.
TOY_STAGE_FILES = {"basis": "basis.pt", "mapping": "mapping.ckpt", "detail": "detail.ckpt", "blend": "blend.ckpt"}

#: Where the shipped configs live: package data of an installed ipsb, then a source checkout.
CONFIG_ROOTS = (PACKAGE / "lightning_configs", PACKAGE.parent / "lightning_configs")


def toy_stage_path(stage: str) -> Path:
    """Path of a shipped toy stage: ``basis``, ``mapping`` (stage 1), ``detail`` (stage 2), ``blend`` (stage 3)."""
    if stage not in TOY_STAGE_FILES:
        raise ValueError(f"no shipped toy stage {stage!r}; the stages are {', '.join(TOY_STAGE_FILES)}")
    return TOY_STAGES / TOY_STAGE_FILES[stage]


def config_dir() -> Path:
    """The folder of the shipped configs (what ``lightning_configs/`` is in a source checkout)."""
    for root in CONFIG_ROOTS:
        if (root / "backbone" / "toy.yaml").is_file():
            return root
    raise FileNotFoundError("ipsb's shipped configs are missing (looked in " + ", ".join(map(str, CONFIG_ROOTS))
                            + "); reinstall ipsb (`pip install .` from the repository)")


def config_path(name: str) -> Path:
    """A shipped config by its path under ``lightning_configs/``, e.g. ``config_path("toy/mapping.yaml")``."""
    path = config_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"ipsb ships no config '{name}' (under {config_dir()})")
    return path
