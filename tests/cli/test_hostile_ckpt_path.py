"""``ipsb fit|validate|test --ckpt_path`` with a checkpoint whose hyper-parameters carry code.

LightningCLI merges a checkpoint's hyper-parameters into the config (after a weights-only load);
typed arguments and ipsb's import policy refuse every ``class_path`` outside the allowlist before
anything is imported or called. The marker file must never appear, and nothing is built.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from ipsb.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "lightning_configs"


def _payload(marker: Path) -> dict:
    return {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}


def _evil(path: Path, class_path: str, **hparams) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": class_path, **hparams}}, path)
    return path


def _refused(args: list[str], cwd: Path, capsys) -> None:
    capsys.readouterr()
    with contextlib.chdir(cwd):
        with pytest.raises(SystemExit) as err:
            main(args)
    assert err.value.code not in (0, None)
    stderr = capsys.readouterr().err
    assert "Importing 'os.system' is not allowed" in stderr, stderr[-2000:]     # refused by the policy


def test_ipsb_test_with_a_networks_payload_never_runs_it(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    toy_regressor = {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}
    cases = {"networks": _payload(marker),
             "nested": {"identity": _payload(marker), "regressor": toy_regressor},
             "methods": [_payload(marker)]}
    for name, value in cases.items():
        hp = {"methods": value} if name == "methods" else {"networks": value}
        ckpt = _evil(tmp_path / f"{name}.ckpt", "ipsb.eval.evaluator.EvaluationModule", **hp)
        _refused(["test", "--config", str(CONFIGS / "eval" / "ffpp_toy.yaml"), "--ckpt_path", str(ckpt)], tmp_path, capsys)
    assert not marker.exists()
    assert not (tmp_path / "outputs").exists()                  # refused before anything was built


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_stage_commands_with_a_backbone_or_optimizer_payload_never_run_it(command, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    stage = "ipsb.stages.mapping_module.MappingModule"
    nested = {"class_path": "ipsb.backbone.bundle.FaceBackbone", "init_args": {"generator": _payload(marker)}}
    for name, hp in {"backbone": {"backbone": _payload(marker)}, "nested": {"backbone": nested},
                     "optimizer": {"optimizer": _payload(marker)}}.items():
        ckpt = _evil(tmp_path / f"{name}.ckpt", stage, **hp)
        _refused([command, "--config", str(CONFIGS / "toy" / "mapping.yaml"), "--ckpt_path", str(ckpt)], tmp_path, capsys)
    assert not marker.exists()
    assert not (tmp_path / "outputs").exists()
