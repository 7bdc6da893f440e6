"""Exact resume: atomic checkpoint writes and RNG states (default tier); in the slow tier, resume after
SIGKILL (mid-epoch, and during a checkpoint write) and per-rank randomness under two gloo processes.

Each run is ``miram pretrain`` on a tiny demo config, 4 crops per batch (9 steps per epoch on one process, 4
on two), a checkpoint every step. A killed run is resumed with the README's command (the same command plus
``--ckpt_path last``) and must end with exactly the weights and optimiser state of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from miram.train.resume import TMP_PREFIX, atomic_save, remove_partial_writes, rng_state, set_rng_state
from tests.train.conftest import DEMO_CONFIGS, REPO

MIRAM = [sys.executable, "-m", "miram.cli", "pretrain"]
HANG = [sys.executable, "-m", "tests.train.hooks"]
BATCH = 4
# MIRAM with a Performer x2 decoder whose features are redrawn every 2 steps: resume must restore the draws
PERFORMER = """\
model:
  init_args:
    model:
      scales:
        - {factor: 1, depth: 2, embed_dim: 64, num_heads: 4, loss_region: masked}
        - factor: 2
          depth: 2
          embed_dim: 64
          num_heads: 4
          loss_region: all
          attention: {name: performer, options: {num_features: 32}}
trainer:
  callbacks:
    - class_path: miram.train.callbacks_attention.FeatureRedraw
      init_args: {interval: 2}
"""


def _configs(method: str, tmp: Path) -> list[str]:
    if method == "miram":
        override = tmp / "performer.yaml"
        override.write_text(PERFORMER)
        return [str(DEMO_CONFIGS / "miram_tiny_nystrom.yaml"), str(override)]
    return [str(DEMO_CONFIGS / f"{method}_tiny.yaml")]


def _command(configs: list[str], cache: str, run: Path, max_steps: int, *extra: str) -> list[str]:
    args = [a for c in configs for a in ("--config", c)]
    return [
        *args,
        "--data.cache",
        cache,
        "--data.num_workers",
        "0",
        "--data.batch_size",
        str(BATCH),
        "--trainer.max_steps",
        str(max_steps),
        "--trainer.max_epochs",
        "-1",
        "--ckpt_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--out",
        str(run),
        *extra,
    ]


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]


def _kill_after_step(cmd: list[str], last: Path, step: int) -> dict[str, Any]:
    """Start ``cmd``, SIGKILL its process group as soon as ``last`` holds step ``step`` or later, and return
    the checkpoint the kill left."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    seen, deadline = -1, time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            mtime = last.stat().st_mtime_ns if last.exists() else -1
            if mtime != seen:
                seen = mtime
                if _load(last)["global_step"] >= step:  # safe to read mid-run: writes are atomic
                    break
            time.sleep(0.01)
    finally:
        alive = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: like a pre-empted job
        _, err = proc.communicate()
    assert alive, f"the run ended before it could be killed at step {step}: {err[-2000:]!r}"
    return _load(last)


def _assert_same_state(resumed: dict[str, Any], reference: dict[str, Any], atol: float = 0.0) -> None:
    assert resumed["global_step"] == reference["global_step"]
    pairs = list(zip(resumed["state_dict"].items(), reference["state_dict"].items()))
    for opt_r, opt_u in zip(resumed["optimizer_states"], reference["optimizer_states"]):
        for key in opt_u["state"]:
            for name, value in opt_u["state"][key].items():
                pairs.append(((f"opt.{key}.{name}", opt_r["state"][key][name]), (name, value)))
    for (name, r), (_, u) in pairs:
        if atol == 0.0:
            assert torch.equal(r, u), f"{name} differs: max |diff| {(r.float() - u.float()).abs().max()}"
        else:
            torch.testing.assert_close(r, u, rtol=0.0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _mid_epoch(checkpoint: dict[str, Any], steps_per_epoch: int) -> bool:
    # a step checkpoint is written in on_train_batch_end, after the batch is processed, before it is completed
    done = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    return 0 < done < steps_per_epoch


def test_atomic_save_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.ckpt"
    atomic_save({"step": torch.tensor(1)}, path)
    atomic_save({"step": torch.tensor(2)}, path)
    assert int(_load(path)["step"]) == 2
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable object
        atomic_save({"step": torch.tensor(3), "bad": lambda: 0}, path)
    assert int(_load(path)["step"]) == 2 and not list(path.parent.glob(TMP_PREFIX + "*"))
    (path.parent / f"{TMP_PREFIX}last.ckpt.abc").write_bytes(b"half a checkpoint")  # a kill's leftover
    assert len(remove_partial_writes(path.parent)) == 1 and [p.name for p in path.parent.iterdir()] == [
        path.name
    ]


def test_rng_states_round_trip_and_load_without_pickled_code(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "s.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(_load(tmp_path / "s.ckpt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mae", "miram", "mocov3"])
def test_sigkill_mid_epoch_then_resume_is_bitwise_exact(
    method: str, phantom_cache: str, tmp_path: Path
) -> None:
    # 9 steps per epoch; kill at a random step inside the first or second epoch, away from its end
    max_steps = 14
    kill_at = random.Random().choice([2, 3, 4, 5, 6, 10, 11])
    print(f"{method}: kill after step {kill_at}")
    configs = _configs(method, tmp_path)
    ref_run, run = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = subprocess.Popen(
        [*MIRAM, *_command(configs, phantom_cache, ref_run, max_steps)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    cmd = [*MIRAM, *_command(configs, phantom_cache, run, max_steps)]
    killed = _kill_after_step(cmd, run / "checkpoints" / "last.ckpt", kill_at)
    assert 0 < killed["global_step"] < max_steps and _mid_epoch(killed, 9), killed["global_step"]
    _run([*cmd, "--ckpt_path", "last"])
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:] if reference.stderr else ""

    resumed = _load(run / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == max_steps
    _assert_same_state(resumed, _load(ref_run / "checkpoints" / "last.ckpt"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == max_steps


@pytest.mark.slow
def test_sigkill_two_gloo_processes_mid_epoch_then_resume_is_exact(
    phantom_cache: str, tmp_path: Path
) -> None:
    # MoCo-v3 couples the ranks most: negatives gathered from both, BatchNorm statistics over both batches.
    # Two ranks: 4 steps per epoch. Tolerance 0: each reduced element is the sum of exactly two addends, in
    # any bucket layout (DDP rebuilds its buckets after the first step of the resumed run), and a + b is
    # exact-commutative in IEEE arithmetic, so nothing is left to differ.
    max_steps = 7
    kill_at = random.Random().choice([1, 2, 5])
    print(f"2 gloo processes: kill after step {kill_at}")
    configs = _configs("mocov3", tmp_path)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    ref_run, run = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = subprocess.Popen(
        [*MIRAM, *_command(configs, phantom_cache, ref_run, max_steps, *ddp)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    cmd = [*MIRAM, *_command(configs, phantom_cache, run, max_steps, *ddp)]
    killed = _kill_after_step(cmd, run / "checkpoints" / "last.ckpt", kill_at)
    assert 0 < killed["global_step"] < max_steps and _mid_epoch(killed, 4), killed["global_step"]
    assert len(killed["rng_states"]) == 2  # one entry per rank
    _run([*cmd, "--ckpt_path", "last"])
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:] if reference.stderr else ""
    _assert_same_state(_load(run / "checkpoints" / "last.ckpt"), _load(ref_run / "checkpoints" / "last.ckpt"))


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_leaves_loadable_last(phantom_cache: str, tmp_path: Path) -> None:
    max_steps, hang_at = 6, 4  # the 4th write (step 4) stops half-way and hangs until killed
    configs = _configs("mae", tmp_path)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [*HANG, str(hang_at), *_command(configs, phantom_cache, run, max_steps)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        line = ""
        while proc.poll() is None and "HANGING" not in line:
            line = proc.stdout.readline()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "HANGING" in line, "the run never reached the hanging checkpoint write"
    killed = _load(last)  # the previous checkpoint, whole
    assert killed["global_step"] == hang_at - 1
    partial = list(last.parent.glob(".tmp-*"))  # the cut-short write went to a temporary file
    assert partial and all(p.stat().st_size > 0 for p in partial), "the kill did not land inside a write"
    _run([*MIRAM, *_command(configs, phantom_cache, run, max_steps), "--ckpt_path", "last"])
    assert _load(last)["global_step"] == max_steps
    assert not list(last.parent.glob(".tmp-*"))  # the resume cleared the cut-short write


def _draws(run: Path, rank: int, step: int) -> dict[str, torch.Tensor]:
    return torch.load(run / "draws" / f"rank{rank}_step{step}.pt", weights_only=True)  # type: ignore[no-any-return]


def _ddp(run: Path, *extra: str) -> list[str]:
    draws = json.dumps(
        {"class_path": "tests.train.hooks.RecordDraws", "init_args": {"out": str(run / "draws")}}
    )
    return ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.callbacks+", draws, *extra]


@pytest.mark.slow
def test_two_ranks_draw_differently_and_reproducibly(phantom_cache: str, tmp_path: Path) -> None:
    configs = _configs("mae", tmp_path)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        _run([*MIRAM, *_command(configs, phantom_cache, run, 2, *_ddp(run))])
    for step in (1, 2):
        a0, a1 = _draws(runs[0], 0, step), _draws(runs[0], 1, step)
        assert not torch.equal(a0["mask"], a1["mask"]), f"step {step}: both ranks drew the same masks"
        assert not torch.equal(a0["images"], a1["images"]), f"step {step}: both ranks saw the same crops"
        for rank in (0, 1):
            a, b = _draws(runs[0], rank, step), _draws(runs[1], rank, step)
            for key in a:
                assert torch.equal(a[key], b[key]), f"rank {rank} step {step}: {key} not reproduced"
