"""``miram bench step``: the models it compares, one measured training step, the printed table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from miram.bench.step import bench_step, build_model, setup_step

TINY = {"encoder": "vit_micro", "patch_size": 8, "decoder_depth": 1, "decoder_dim": 32, "decoder_heads": 2}


def test_models_differ_only_by_the_x2_decoder() -> None:
    mae = build_model("mae", 32, **TINY)
    miram = build_model("miram-nystrom", 32, **TINY)
    assert [s.factor for s in mae.config.scales] == [1]
    assert [s.factor for s in miram.config.scales] == [1, 2]
    assert miram.config.scales[1].attention.name == "nystrom" and miram.config.data_size == (64, 64)
    with pytest.raises(ValueError, match="unknown method"):
        build_model("simmim", 32)


def test_a_step_is_forward_backward_and_an_optimiser_update(monkeypatch: pytest.MonkeyPatch) -> None:
    updates: list[int] = []

    def counting_step(self: torch.optim.AdamW, closure: None = None) -> None:
        grads = [p.grad for g in self.param_groups for p in g["params"]]
        updates.append(sum(g is not None for g in grads))

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    step = setup_step("miram-linformer", 32, batch=2, dtype="fp32", device="cpu", **TINY)
    step()
    step()
    model = build_model("miram-linformer", 32, **TINY)
    assert updates == [sum(1 for _ in model.parameters())] * 2  # every parameter got a gradient, twice


def test_bench_step_prints_the_table_and_writes_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = bench_step(
        sizes=[32], methods=["mae", "miram-sdpa"], batch=2, repeats=1, json=str(tmp_path / "s.json"), **TINY
    )
    assert [r["method"] for r in records] == ["mae", "miram-sdpa"]
    assert all(r["seconds"] > 0 and r["peak_mb"] >= 0 for r in records)
    out = capsys.readouterr().out
    assert "| miram-sdpa | 32 | 64 |" in out and "time vs MAE" in out
    assert json.loads((tmp_path / "s.json").read_text())[1]["hr_tokens"] == 64
