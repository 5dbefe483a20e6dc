"""Suite-wide fixtures: seeded RNGs, the fixture folder, single-threaded determinism where asked."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers.chains import standin_chain, toy_chain  # noqa: F401  (session fixtures)
from helpers.standin_checkpoints import standin_backbone, standin_checkpoints  # noqa: F401  (session fixtures)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
