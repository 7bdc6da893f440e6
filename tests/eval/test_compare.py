"""``miram compare`` keeps collections apart: one table per (protocol, collection, label)."""

from __future__ import annotations

import json
from pathlib import Path

from miram.eval.compare import compare
from miram.eval.metrics import METRICS


def summary(collection: str | None, group: str, auroc: float, seed: int) -> dict[str, object]:
    metric = {"value": auroc, "lo": auroc - 0.05, "hi": auroc + 0.05}
    return {
        "kind": "probe", "label": "density", "group": group, "seed": seed, "collection": collection,
        "metrics": {m: metric for m in METRICS},
    }  # fmt: skip


def test_compare_tabulates_each_collection_apart(tmp_path: Path) -> None:
    runs = [
        summary("vindr-mammo", "mae", 0.70, 0), summary("vindr-mammo", "mae", 0.72, 1),
        summary("vindr-mammo", "miram", 0.75, 0), summary("rsna", "mae", 0.60, 0),
        summary(None, "mae", 0.50, 0),  # a summary written before runs named their collection
    ]  # fmt: skip
    for i, s in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "summary.json").write_text(json.dumps(s))
    table = compare(str(tmp_path))
    blocks = {b.splitlines()[0]: b for b in table.strip().split("\n\n**")}
    titles = sorted(t.strip("*").split("**")[0] for t in blocks)
    assert titles == ["probe, `density`", "probe, `rsna / density`", "probe, `vindr-mammo / density`"]
    vindr = next(b for t, b in blocks.items() if "vindr-mammo" in t)
    assert "| mae | 0.710 ± 0.014" in vindr and "| miram | **0.750" in vindr and "0.600" not in vindr
