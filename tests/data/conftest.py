"""Fixtures of the data tests (the builders live in ``cbis_fakes.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cbis_fakes import FakeLesion, build_tree, standard_lesions


@pytest.fixture
def fake_tree(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``fake_tree(layout, lesions=None, **kw) -> (root, csv_dir)``."""

    def make(layout: str, lesions: list[FakeLesion] | None = None, **kw: Any) -> tuple[Path, Path]:
        root = tmp_path / f"download-{layout}"
        return root, build_tree(root, layout, lesions or standard_lesions(), **kw)

    return make
