"""Device-parity tests: the ``device`` fixture, float32 settings that keep GPU and CPU comparable.

``device`` is ``$IPSB_TEST_DEVICE`` if set (``cpu`` runs every test CPU-vs-CPU, to check the tests
themselves), else ``cuda`` when available; otherwise the tests are skipped.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# tests/basis holds the tiny seeded basis world (``basis_tiny``), imported there as a top-level module
BASIS_TESTS = str(Path(__file__).resolve().parents[1] / "basis")
if BASIS_TESTS not in sys.path:
    sys.path.append(BASIS_TESTS)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: device-parity test (skipped without CUDA unless IPSB_TEST_DEVICE is set)")


@pytest.fixture(scope="session")
def device() -> torch.device:
    name = os.environ.get("IPSB_TEST_DEVICE")
    if not name:
        if not torch.cuda.is_available():
            pytest.skip("needs CUDA (or IPSB_TEST_DEVICE=cpu to exercise the test logic on CPU)")
        name = "cuda"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:     # tensors report cuda:N; compare like with like
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 (it would blow float32 tolerances) and no deterministic-algorithms mode (an earlier
    ``Trainer(deterministic=True)`` in the session leaves it on, and some CUDA kernels then raise)."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(False)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    torch.use_deterministic_algorithms(det[0], warn_only=det[1])
