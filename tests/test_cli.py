from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from miram.cli import main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "prepare", "pretrain", "probe", "compare", "bench", "export"):
        assert command in out


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_every_dispatched_command_resolves() -> None:
    from miram.cli import COMMANDS, _resolve

    for entry in COMMANDS.values():
        for target in entry.values() if isinstance(entry, dict) else [entry]:
            assert callable(_resolve(target)[0]), target


def test_pretrain_print_config_runs_in_a_fresh_process() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "miram.cli",
            "pretrain",
            "--config",
            "configs/demo/mae_tiny.yaml",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "LitMaskedAutoencoder" in out.stdout and "mask_ratio: 0.75" in out.stdout


def test_importing_miram_does_not_import_lightning() -> None:
    code = "import sys, miram, miram.cli; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_option_names_may_be_written_with_dashes(tmp_path: Path) -> None:
    from miram.data.cache import Cache

    def val_count(name: str, *options: str) -> int:
        base = ["prepare", "phantoms", "--out", str(tmp_path / name), "--num", "40", "--size", "32"]
        assert main([*base, *options]) == 0
        return len(Cache(tmp_path / name).indices("val"))

    dashed = val_count("dashed", "--val-fraction=0.5")
    assert dashed == val_count("underscored", "--val_fraction", "0.5")
    assert dashed != val_count("default")
