"""checkpoints/README.md, the registry (ipsb/assets/checkpoint_registry.yaml, read into ipsb.checkpoints.REGISTRY) and the shipped configs agree.

Which files a shipped config reads is measured, not declared: every backbone config and every
evaluation config's ``networks`` is built with empty checkpoint folders, and the one
MissingCheckpointError it raises names every file it needs (files a component finds by itself, like
LPIPS' AlexNet weights, included); bare file names written in any config are added.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

import ipsb.checkpoints as ckpts
from ipsb.backbone.bundle import COMPONENTS as BACKBONE_COMPONENTS
from ipsb.backbone.bundle import FaceBackbone
from ipsb.checkpoints import REGISTRY, MissingCheckpointError
from ipsb.eval.networks import COMPONENTS as METRIC_COMPONENTS
from ipsb.eval.networks import MetricNetworks

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "lightning_configs"
README = REPO / "checkpoints" / "README.md"
FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".mat")
NAME_IN_MESSAGE = re.compile(r"'([^'/\s]+(?:" + "|".join(re.escape(s) for s in FILE_SUFFIXES) + r"))'")


def _bare_file_names(node) -> set[str]:
    """Strings in a config that are bare checkpoint file names (no folder: resolved in checkpoints/)."""
    if isinstance(node, dict):
        return set().union(*(_bare_file_names(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_bare_file_names(v) for v in node)) if node else set()
    if isinstance(node, str) and "/" not in node and node.endswith(FILE_SUFFIXES):
        return {node}
    return set()


def _files_needed(build) -> set[str]:
    try:
        build()
    except MissingCheckpointError as e:
        return set(NAME_IN_MESSAGE.findall(str(e)))
    return set()


@pytest.fixture
def no_checkpoints(tmp_path, monkeypatch):
    """Every checkpoint folder (and torchvision's cache) empty."""
    for d in ("ckpt", "repo_ckpt", "torch", "cwd"):
        (tmp_path / d).mkdir()
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(ckpts, "REPO_CHECKPOINTS", tmp_path / "repo_ckpt")
    monkeypatch.chdir(tmp_path / "cwd")


def files_read_by_shipped_configs() -> dict[str, set[str]]:
    """``{file name: {config path relative to lightning_configs}}``, measured (see module docstring)."""
    found: dict[str, set[str]] = {}
    for path in sorted(CONFIGS.rglob("*.yaml")):
        rel = path.relative_to(CONFIGS).as_posix()
        cfg = yaml.safe_load(path.read_text()) or {}
        names = _bare_file_names(cfg)
        if str(cfg.get("class_path", "")).endswith("FaceBackbone"):
            names |= _files_needed(lambda: FaceBackbone.from_config(path))
        networks = ((cfg.get("model") or {}).get("init_args") or {}).get("networks")
        if networks:
            names |= _files_needed(lambda: MetricNetworks.from_config(networks))
        for name in names:
            found.setdefault(name, set()).add(rel)
    return found


def readme_tables() -> dict[str, list[list[str]]]:
    """``{section title: rows}`` of the markdown tables of checkpoints/README.md (header row dropped)."""
    tables: dict[str, list[list[str]]] = {}
    section = None
    for line in README.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("| `") and section is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.setdefault(section, []).append(cells)
    return tables


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_registry_matches_the_files_shipped_configs_read(no_checkpoints):
    found = files_read_by_shipped_configs()
    assert {"stylegan2-ffhq-config-f.pt", "alexnet-owt-7be5be79.pth", "net_sphere20_data_vggface2_acc_9955.pth"} <= set(found)
    unregistered = sorted(set(found) - set(REGISTRY))
    assert not unregistered, f"shipped configs read files missing from REGISTRY: {unregistered}"
    for name, info in REGISTRY.items():
        assert set(info.read_by) == found.get(name, set()), (
            f"{name}: REGISTRY says read by {sorted(info.read_by)}, the shipped configs read it in "
            f"{sorted(found.get(name, set()))}")
        assert bool(info.read_by) != bool(info.selected_by), (
            f"{name}: an entry is either read by a shipped config or an optional alternative with the line "
            f"that selects it")


def test_readme_lists_exactly_the_registry(no_checkpoints):
    tables = readme_tables()
    read = {_ticked(row[0])[0]: row for row in tables["Files the shipped configs read"]}
    optional = {_ticked(row[0])[0]: row for row in tables["Optional alternatives"]}
    assert set(read) == {n for n, i in REGISTRY.items() if i.read_by}
    assert set(optional) == {n for n, i in REGISTRY.items() if not i.read_by}
    for name, row in read.items():
        assert set(_ticked(row[2])) == set(REGISTRY[name].read_by), name
        if REGISTRY[name].sha256:
            assert REGISTRY[name].sha256 in row[4], name
    for name, row in optional.items():
        assert _ticked(row[2]) == [REGISTRY[name].selected_by], name


@pytest.mark.parametrize("name", [n for n, i in REGISTRY.items() if i.selected_by])
def test_optional_alternative_lines_select_a_loader_of_that_file(name):
    """The README's line is a backbone / metric-network component whose loader takes the file."""
    line = yaml.safe_load("{" + REGISTRY[name].selected_by + "}")
    assert isinstance(line, dict) and len(line) == 1, REGISTRY[name].selected_by
    (component, spec), = line.items()
    assert component in BACKBONE_COMPONENTS + METRIC_COMPONENTS
    module, _, attr = spec["class_path"].rpartition(".")
    loader = getattr(importlib.import_module(module), attr)
    (arg, value), = spec["init_args"].items()
    assert value == name and arg in inspect.signature(loader).parameters
    assert inspect.signature(loader).parameters[arg].default == name   # also its default file


def test_missing_alexnet_is_named_not_downloaded(no_checkpoints, monkeypatch):
    """LPIPS' ImageNet trunk resolves through the registry's folders; missing, it is named (no download)."""
    import torch

    from ipsb.backbone.perceptual import Perceptual

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(MissingCheckpointError, match="alexnet-owt-7be5be79.pth") as err:
        Perceptual(net="alex")
    assert "torchvision AlexNet ImageNet weights" in str(err.value)     # the registry's description
