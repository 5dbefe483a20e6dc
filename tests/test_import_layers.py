"""ipsb's packages import each other in one direction (docs/architecture.md, "Packages and their
imports"): a module-level import goes to a lower layer only. Imports inside a function (an optional
path, or a command reaching up) are not bound by it."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ipsb"

#: layer -> the top-level packages and modules of ipsb in it (the table in docs/architecture.md)
LAYERS = {
    0: {"checkpoints", "config_objects", "assets", "error_boundary", "losses", "video_io", "loggers"},
    1: {"backbone", "basis", "data", "checkpoint_io"},
    2: {"metrics", "nets"},
    3: {"eval"},
    4: {"stages"},
    5: {"swap", "callbacks", "inversion"},
    6: {"lightning_cli", "demo", "editing", "swap_cli", "training", "__init__"},
    7: {"cli"},
    8: {"__main__"},
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def _part(module: str) -> str:
    """``ipsb.eval.networks`` -> ``eval``; ``ipsb`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_level_imports() -> list[tuple[str, str, str]]:
    """(file, importing part, imported part) for every module-level ``ipsb`` import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ipsb":
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "ipsb"]
            else:
                continue
            found += [(path.relative_to(PACKAGE.parent).as_posix(), here, _part(t)) for t in targets]
    return found


def test_every_part_of_ipsb_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_file() and p.suffix == ".py") or (p / "__init__.py").is_file()}
    assert parts == set(LAYER_OF), (sorted(parts - set(LAYER_OF)), sorted(set(LAYER_OF) - parts))


def test_module_level_imports_go_down_the_layers_only():
    imports = module_level_imports()
    assert len(imports) > 50                                    # the walk found ipsb's imports
    upward = [f"{f}: {a} (layer {LAYER_OF[a]}) imports {b} (layer {LAYER_OF[b]})"
              for f, a, b in imports if a != b and LAYER_OF[b] >= LAYER_OF[a]]
    assert not upward, "\n".join(upward)
