"""Shared fixtures. Tests are offline, deterministic and CPU-only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MAMMOSYNTH_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: ../shared/data beside the checkout (absent in a fresh clone elsewhere: tests skip).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tests of tiny networks: they run fastest so, and more threads only
    spin against each other on a shared 2-core machine. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``; module-scoped, so it also covers
    the module's module-scoped fixtures (tiny training runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shared_data(*parts: str) -> Path:
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data is only beside the development checkout)")
    return p
