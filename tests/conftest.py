"""Shared fixtures and the test tiers: default (CPU, minutes) and slow (--runslow, also in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from miram.data.phantom import prepare_phantoms

SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def cbis_csv_dir() -> Path:
    """The four original CBIS-DDSM CSVs (skip when the shared data folder is absent)."""
    d = SHARED / "data" / "cbis-ddsm"
    if not (d / "mass_case_description_train_set.csv").exists():
        pytest.skip(f"CBIS-DDSM CSVs not found at {d}")
    return d


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """48 phantoms at 128 px: enough for every split."""
    return prepare_phantoms(str(tmp_path_factory.mktemp("cache") / "phantoms"), num=48, size=128, seed=0)
