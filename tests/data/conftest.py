"""Fixtures of the data tests (the builders live in ``cbis_fakes.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# the builders are imported by name from the test modules too; this works whether or not tests/data is a
# package (pytest's rootdir-relative import then names it data.cbis_fakes)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cbis_fakes import FakeLesion, build_tree, standard_lesions  # noqa: E402


@pytest.fixture
def fake_tree(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``fake_tree(layout, lesions=None, **kw) -> (root, csv_dir)``."""

    def make(layout: str, lesions: list[FakeLesion] | None = None, **kw: Any) -> tuple[Path, Path]:
        root = tmp_path / f"download-{layout}"
        return root, build_tree(root, layout, lesions or standard_lesions(), **kw)

    return make
