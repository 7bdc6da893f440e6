"""``miram bench attention`` end to end at tiny sizes: records, table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from miram.bench.attention import bench_attention
from miram.bench.runner import measure, run_isolated, time_step


def test_time_step_warms_up_then_repeats() -> None:
    calls = []
    times = time_step(lambda: calls.append(1), warmup=1, repeats=5, budget_s=None)
    assert len(times) == 5 and len(calls) == 6


def test_measure_reports_time_and_memory() -> None:
    def setup(size: int) -> object:
        return lambda: bytearray(size)

    result = measure(setup, {"size": 1 << 20}, repeats=2)  # type: ignore[arg-type]
    assert result["seconds"] >= 0 and result["peak_mb"] >= 0 and result["memory"] == "cpu_rss"


def test_bench_attention_writes_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    bench_attention(
        tokens=[64, 128],
        dim=64,
        heads=2,
        head_dim=32,
        backends=["nystrom"],
        repeats=1,
        rounds=2,
        malloc="reuse",
        json=str(out),
        plot=str(png),
    )
    records = json.loads(out.read_text())
    assert {(r["backend"], r["impl"], r["tokens"]) for r in records} == {
        ("nystrom", impl, n) for impl in ("miram", "reference") for n in (64, 128)
    }
    for r in records:
        if r["impl"] == "reference" and r.get("error"):
            assert "not installed" in r["error"]
            continue
        assert r["seconds"] > 0 and r["peak_mb"] >= 0, r
        assert r["rounds"] == 2 and len(r["times"]) == 2 and r["seconds_min"] <= r["seconds"]
        assert r["malloc"] == "reuse" and r["malloc_env"] == {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**30)}
    with Image.open(png) as im:  # a real plot, not an empty file
        assert im.format == "PNG" and min(im.size) >= 300
    assert "| nystrom | 128 |" in capsys.readouterr().out


def test_system_malloc_leaves_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1234")  # "system" means glibc's defaults, whatever is set
    kwargs = {"backend": "sdpa", "impl": "miram", "tokens": 16, "dim": 32, "heads": 2, "head_dim": 16}
    kwargs |= {"batch": 1, "dtype": "fp32", "device": "cpu"}
    result = run_isolated("miram.bench.attention:setup_point", kwargs, repeats=1)  # default: system
    assert result["seconds"] > 0 and result["malloc_env"] == {}
    with pytest.raises(ValueError, match="malloc must be one of"):
        run_isolated("miram.bench.attention:setup_point", kwargs, malloc="jemalloc")


def test_bench_attention_needs_a_round() -> None:
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        bench_attention(tokens=[16], rounds=0)
