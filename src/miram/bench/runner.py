"""Timing and peak-memory helpers shared by the ``miram bench`` commands.

Each measured point runs in a fresh Python process (:func:`run_isolated`), so one configuration's
allocations (the CPU allocator keeps freed memory, the peak RSS never goes down) cannot pollute the
next one. Inside that process :func:`measure` times a step (warm-up, repeats, median) and reports
peak memory: on CUDA the allocator's peak, on CPU the peak resident set size (``ru_maxrss``) minus the
resident size after set-up, so interpreter, libraries, parameters and inputs are excluded.

The child protocol: ``python -m miram.bench.runner '{"target": "pkg.module:setup", "kwargs": {...}}'``
where ``setup(**kwargs)`` builds everything and returns the step to time; the child prints one line
``MIRAM_BENCH_RESULT {json}``.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

RESULT_PREFIX = "MIRAM_BENCH_RESULT "

# glibc hands blocks above a (dynamic, <= 32 MB) threshold straight back to the kernel when they are
# freed, so every step of a large configuration page-faults its activations in again: at 16,384 tokens
# that is a third of an attention layer's time on a 2-core VM, and it grows faster than N. A GPU run has
# no such cost (PyTorch's caching allocator keeps freed blocks). "system" keeps glibc's defaults (what an
# unconfigured machine does, and the commands' default); "reuse" raises the threshold so freed memory
# stays in the heap for the next step, as the caching allocator does, which leaves the compute alone.
# The setting is per child process and the same for every point of a run.
MALLOC_ENV = {"reuse": {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**30)}, "system": {}}


def cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def resolve_device(device: str, threads: int | None) -> tuple[str, str]:
    """``device`` with "auto" resolved (CUDA when available), and its name for the table headers."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return device, torch.cuda.get_device_name(device)
    return device, f"{cpu_name()}, {threads or torch.get_num_threads()} threads"


def autocast_for(device: str, dtype: str) -> torch.autocast:
    """The context a benchmarked step runs in: off for "fp32", autocast to "bf16" / "fp16" otherwise
    (fp32 weights, the only way every reference package runs in low precision)."""
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    return torch.autocast(torch.device(device).type, dtype=low or torch.float32, enabled=low is not None)


def _current_rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``; elsewhere the peak so far, a safe over-estimate)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def time_step(
    step: Callable[[], None],
    warmup: int = 1,
    repeats: int = 3,
    budget_s: float | None = None,
    sync: Callable[[], None] | None = None,
    cpu_out: list[float] | None = None,
) -> list[float]:
    """Wall-clock seconds of ``step`` after ``warmup`` untimed calls.

    Args:
        step: the work to time.
        warmup: untimed calls first (allocator, kernel selection, caches).
        repeats: timed calls.
        budget_s: when the warm-up shows that ``repeats`` calls would take longer, time fewer (at least
            one), so slow exact baselines stay affordable.
        sync: called before reading the clock (``torch.cuda.synchronize`` on GPU).
        cpu_out: if given, receives the process CPU seconds of each timed call (all threads); on a
            machine shared with other jobs this is steadier than wall-clock time.

    Returns:
        the timed seconds, one per call.
    """
    sync = sync or (lambda: None)
    first = 0.0
    for i in range(warmup):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if i == 0:
            first = time.perf_counter() - start
    if budget_s is not None and first > 0:
        repeats = max(1, min(repeats, int(budget_s / first)))
    times, cpu_times = [], []
    for _ in range(repeats):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if cpu_out is not None:
        cpu_out.extend(cpu_times)
    return times


def measure(
    setup: Callable[..., Callable[[], None]],
    kwargs: dict[str, Any],
    warmup: int = 1,
    repeats: int = 3,
    budget_s: float | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build a step with ``setup(**kwargs)``, then time it and measure its peak memory.

    Meant to run in a fresh process (:func:`run_isolated`); on CPU the peak is only meaningful there.
    Pass ``device`` in ``kwargs`` to select CUDA accounting; ``threads`` sets torch's intra-op threads.

    Returns:
        ``{"seconds": median, "seconds_min": min, "cpu_seconds": median process CPU time, "threads",
        "times": [...], "peak_mb": float, "memory": "cuda_allocator" | "cpu_rss"}``.
    """
    if threads:
        torch.set_num_threads(threads)
    step = setup(**kwargs)
    cpu_times: list[float] = []
    cuda = str(kwargs.get("device", "cpu")).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = time_step(step, warmup, repeats, budget_s, torch.cuda.synchronize, cpu_times)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _current_rss_bytes()
        times = time_step(step, warmup, repeats, budget_s, None, cpu_times)
        peak = _peak_rss_bytes() - base
    return {
        "seconds": statistics.median(times),
        "seconds_min": min(times),
        "cpu_seconds": statistics.median(cpu_times),
        "threads": torch.get_num_threads(),
        "times": times,
        "peak_mb": max(peak, 0) / 2**20,
        "memory": "cuda_allocator" if cuda else "cpu_rss",
    }


def run_isolated(
    target: str,
    kwargs: dict[str, Any],
    warmup: int = 1,
    repeats: int = 3,
    budget_s: float | None = None,
    timeout_s: float | None = None,
    threads: int | None = None,
    malloc: str = "system",
) -> dict[str, Any]:
    """Run :func:`measure` for ``target`` (``"module:setup"``) in a fresh Python process.

    ``malloc`` is the CPU allocator policy of the child, a key of :data:`MALLOC_ENV`.

    Returns:
        the child's result, or ``{"error": message}`` when it failed (e.g. out of memory).
    """
    payload = json.dumps(
        {
            "target": target,
            "kwargs": kwargs,
            "warmup": warmup,
            "repeats": repeats,
            "budget_s": budget_s,
            "threads": threads,
        }
    )
    if malloc not in MALLOC_ENV:
        raise ValueError(f"malloc must be one of {sorted(MALLOC_ENV)}, got '{malloc}'")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "miram.bench.runner", payload],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={k: v for k, v in os.environ.items() if k not in MALLOC_ENV["reuse"]} | MALLOC_ENV[malloc],
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return {"error": tail[0][:300]}


def main(argv: list[str] | None = None) -> None:
    """Child entry point: measure one point and print it as JSON."""
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    module, func = spec["target"].split(":")
    setup = getattr(importlib.import_module(module), func)
    result = measure(
        setup, spec["kwargs"], spec["warmup"], spec["repeats"], spec["budget_s"], spec["threads"]
    )
    # What the child's allocator was actually given, so a record shows the policy it ran under.
    result["malloc_env"] = {k: os.environ[k] for k in MALLOC_ENV["reuse"] if k in os.environ}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
