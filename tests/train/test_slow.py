"""Slow tier: two-process DDP on CPU and the demo (--runslow); kill-and-resume lives in test_resume.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.conftest import DEMO_CONFIGS, REPO

pytestmark = pytest.mark.slow
MIRAM = [sys.executable, "-m", "miram.cli"]


def _pretrain_cmd(cache: str, root: Path, name: str, *extra: str) -> list[str]:
    return [
        *MIRAM,
        "pretrain",
        "--config",
        str(DEMO_CONFIGS / "miram_tiny_nystrom.yaml"),
        "--data.cache",
        cache,
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "8",
        "--out",
        str(root / name),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def test_ddp_two_cpu_processes(phantom_cache: str, tmp_path: Path) -> None:
    cmd = _pretrain_cmd(
        phantom_cache,
        tmp_path,
        "ddp",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.max_epochs",
        "1",
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["devices"] == 2
    # 34 training phantoms, 8 per device and step, 2 devices: 2 optimiser steps in the epoch
    assert summary["global_step"] == 2


def test_demo_end_to_end(tmp_path: Path) -> None:
    start = time.time()
    out = subprocess.run(
        [*MIRAM, "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=2400,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Linear probe on phantoms" in out.stdout
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    for method in ("MAE", "MIRAM (Nystrom x2)", "scratch (random init)"):
        probe = results[method]["probe"]
        for metric in ("auroc", "ap", "accuracy"):
            assert probe[metric]["lo"] <= probe[metric]["value"] <= probe[metric]["hi"]
    figures = list((tmp_path / "demo" / "runs" / "miram_tiny_nystrom" / "figures").glob("*_x2.png"))
    assert figures
    print(f"demo took {time.time() - start:.0f} s")
