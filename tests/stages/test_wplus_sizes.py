"""W+ sizes come from the stage's generator: a file of another shape is refused at setup, naming the
file and both shapes (not deep inside a batch), and shipped configs no longer write the sizes."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from helpers.swap_world import toy_backbone
from ipsb.data.latents import LatentFileDataModule

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"


def _attached(dm: LatentFileDataModule, generator) -> LatentFileDataModule:
    """The DataModule as Lightning hands it a trainer fitting a stage with ``generator``."""
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(backbone=SimpleNamespace(generator=generator)))
    return dm


def test_file_codes_are_checked_against_the_fitted_generator(tmp_path):
    gen = toy_backbone().generator                                   # 10 x 32 W+
    torch.save(torch.randn(12, 18, 512), tmp_path / "e4e_1024.pt")      # a 1024 px inversion file
    with pytest.raises(ValueError, match=r"e4e_1024\.pt.*\[12, 18, 512\].*\[N,10,32\]"):
        _attached(LatentFileDataModule(str(tmp_path / "e4e_1024.pt"), num_val_codes=4), gen).setup("fit")
    torch.save(torch.randn(12, 10, 32), tmp_path / "toy.pt")
    dm = _attached(LatentFileDataModule(str(tmp_path / "toy.pt"), num_val_codes=4, batch_size=4), gen)
    dm.setup("fit")
    assert dm.train_set.codes.shape[1:] == (10, 32)
    with pytest.raises(ValueError, match=r"toy\.pt.*\[18,512\].*generator's \[10,32\]"):
        _attached(LatentFileDataModule(str(tmp_path / "toy.pt"), num_val_codes=4, num_ws=18, w_dim=512), gen).setup()


def test_shipped_configs_leave_the_sizes_to_the_generator():
    for path in CONFIGS.glob("*.yaml"):
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
        if data.get("class_path", "").endswith("LatentFileDataModule"):
            assert not {"num_ws", "w_dim"} & set(data.get("init_args") or {}), path
