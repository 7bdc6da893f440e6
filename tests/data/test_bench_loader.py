"""``miram bench loader`` runs (a smoke test; the throughput itself is measured by the command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from miram.bench.loader import bench_loader
from miram.data.cache import CacheRecord, CacheWriter, LabelSpec


def test_bench_loader_reports_crops_per_second(tmp_path: Path) -> None:
    pytest.importorskip("kornia", reason="the training DataModule needs kornia")
    writer = CacheWriter(tmp_path / "c", "test")
    for i in range(4):
        writer.add(
            CacheRecord(f"r{i}", "train", f"p{i}"), np.full((40 + 8 * i, 30), 1000 * (i + 1), np.uint16)
        )
    writer.finalize({"label": LabelSpec("binary", ["a", "b"])})
    result = bench_loader(str(tmp_path / "c"), size=32, workers=0, batch_size=4, seconds=0.2)
    assert result["crops_per_s"] > 0 and result["crops"] >= 4
