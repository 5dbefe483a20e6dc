"""A key given twice in one YAML mapping is refused before anything runs (plain YAML keeps the last one
silently, so a second ``callbacks:`` list would drop the first); no shipped config has one."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.hostile import CONFIGS, assert_refused
from ipsb.lightning_cli import check_config_files


def test_a_config_with_a_key_twice_is_refused_naming_the_key_and_both_lines(ipsb, tmp_path):
    cfg = tmp_path / "twice.yaml"
    cfg.write_text((CONFIGS / "toy" / "mapping.yaml").read_text()
                   + "trainer:\n  max_steps: 1\n")                       # a second top-level trainer
    line = assert_refused(ipsb("fit", "--config", cfg, cwd=tmp_path), "fit", cfg.name, "'trainer'", "twice")
    assert "merge them" in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("config", sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")))
def test_shipped_configs_have_no_key_twice(config):
    check_config_files(["--config", str(CONFIGS / config)])
