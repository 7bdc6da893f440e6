from __future__ import annotations

from pathlib import Path

import pytest

from miram.data.phantom import prepare_phantoms

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIGS = REPO / "configs" / "demo"


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """48 phantoms at 128 px: enough for every split."""
    return prepare_phantoms(str(tmp_path_factory.mktemp("cache") / "phantoms"), num=48, size=128, seed=0)
