"""The shipped basis configs parse against BasisModule's signature; the toy one runs end to end."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from ipsb.basis.artifact import Basis
from ipsb.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"


def checkpoints_under(folder: Path) -> str:
    """``--trainer.callbacks`` value moving the config's ModelCheckpoint folder under ``folder``."""
    return json.dumps([{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {"dirpath": str(folder / "checkpoints")}}])


@pytest.mark.parametrize("name", ["basis.yaml", "toy/basis.yaml"])
def test_basis_config_parses(name):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(CONFIGS / name), "--print_config"])
    assert e.value.code in (0, None)
    cfg = yaml.safe_load(out.getvalue())
    args = cfg["model"]["init_args"]
    assert cfg["model"]["class_path"] == "ipsb.stages.basis_module.BasisModule"
    assert set(args["k"]) == set(args["groups"])
    assert args["overwrite"] is False


@pytest.mark.slow
def test_basis_toy_config_fits_and_writes(tmp_path):
    out = tmp_path / "toy_basis.pt"
    main(["fit", "--config", str(CONFIGS / "toy/basis.yaml"), "--model.init_args.output_path", str(out),
          "--data.init_args.num_samples", "2", "--data.init_args.batch_size", "2",
          "--trainer.default_root_dir", str(tmp_path / "run"),    # the run's config.yaml goes there
          "--trainer.callbacks", checkpoints_under(tmp_path)])
    b = Basis.load(out)
    assert list(b.groups) == ["pose", "exp", "light"]
    assert b.layer_mask.nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    assert b.config["num_samples"] == 2
