"""``miram bench attention``: forward+backward time and peak memory of every attention backend and of
the three reference packages, in the same run, over token counts.

Settings are the MIRAM decoder's (attention.md §1) for both sides: Nyström 64 landmarks, 6 pinv
iterations and the 33-tap conv residual; Linformer k = 128 with one shared K = V head; Performer
int(Dh ln Dh) = 110 features for Dh = 32. q/k/v projections have no bias on either side (the
packages' default). Each point runs in a fresh process (see :mod:`miram.bench.runner`); points of
one token count run back to back, ours next to its reference, so load changes on a shared machine
affect both alike.
"""

from __future__ import annotations

import importlib.util
import json as jsonlib
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from miram.attention import AttentionSpec, build_attention
from miram.bench.runner import autocast_for, resolve_device, run_isolated

# Reference package of each approximation: (backend, import name, PyPI name).
REFERENCES = {
    "nystrom": ("nystrom_attention", "nystrom-attention==0.0.14"),
    "linformer": ("linformer", "linformer==0.2.3"),
    "performer": ("performer_pytorch", "performer-pytorch==1.1.4"),
}
MIRAM_OPTIONS: dict[str, dict[str, Any]] = {
    "nystrom": {"num_landmarks": 64, "pinv_iterations": 6, "conv_kernel": 33},
    "linformer": {"proj_len": 128, "share_kv": True, "one_kv_head": True},
    "performer": {"num_features": None},
}


def _num_features(head_dim: int) -> int:
    return int(head_dim * math.log(head_dim))


def build_module(backend: str, impl: str, tokens: int, dim: int, heads: int, head_dim: int) -> nn.Module:
    """One attention layer ``(B, N, dim) -> (B, N, dim)``, ours or the reference package's."""
    if impl == "miram":
        spec = AttentionSpec(backend, dict(MIRAM_OPTIONS.get(backend, {})))
        return build_attention(spec, dim, heads, head_dim=head_dim, qkv_bias=False, seq_len=tokens)
    if backend == "nystrom":
        from nystrom_attention import NystromAttention

        return NystromAttention(
            dim=dim, dim_head=head_dim, heads=heads, num_landmarks=64, pinv_iterations=6, residual=True,
            residual_conv_kernel=33,
        )  # fmt: skip
    if backend == "linformer":
        from linformer import LinformerSelfAttention

        return LinformerSelfAttention(
            dim=dim, seq_len=tokens, k=128, heads=heads, dim_head=head_dim, one_kv_head=True, share_kv=True
        )
    if backend == "performer":
        from performer_pytorch import SelfAttention

        return SelfAttention(dim=dim, heads=heads, dim_head=head_dim, nb_features=_num_features(head_dim))
    raise ValueError(f"no reference package for backend '{backend}'")


def setup_point(
    backend: str,
    impl: str,
    tokens: int,
    dim: int,
    heads: int,
    head_dim: int,
    batch: int,
    dtype: str,
    device: str,
) -> Callable[[], None]:
    """Build one layer and its input; return the forward+backward step (run by the bench runner).

    ``dtype`` "fp32" runs in fp32; "bf16" / "fp16" run under autocast with fp32 weights (the only
    way every reference package runs in low precision).
    """
    torch.manual_seed(0)
    module = build_module(backend, impl, tokens, dim, heads, head_dim).to(device)
    x = torch.randn(batch, tokens, dim, device=device, requires_grad=True)

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        with autocast_for(device, dtype):
            out = module(x)
        out.float().sum().backward()

    return step


def _combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the rounds of a point: medians of the rounds' medians, the overall minimum."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    merged = dict(rounds[0])
    for key in ("seconds", "cpu_seconds", "peak_mb"):
        merged[key] = statistics.median(r[key] for r in rounds)
    merged["seconds_min"] = min(r["seconds_min"] for r in rounds)
    merged["times"] = [t for r in rounds for t in r["times"]]
    merged["rounds"] = len(rounds)
    return merged


def _markdown(records: list[dict[str, Any]], tokens: list[int]) -> str:
    """The results as one Markdown table: ours next to the reference, with ratios."""
    by_key = {(r["backend"], r["impl"], r["tokens"]): r for r in records}
    backends = list(dict.fromkeys(r["backend"] for r in records))

    def cell(r: dict[str, Any] | None, field: str, fmt: str) -> str:
        if r is None:
            return "–"
        if r.get(field) is None:
            return str(r.get("error", "–"))
        return format(r[field], fmt)

    lines = [
        "| backend | N | miram s | reference s | time ratio | min-time ratio | CPU-time ratio "
        "| miram peak MB | reference peak MB | memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend in backends:
        for n in tokens:
            ours, ref = by_key.get((backend, "miram", n)), by_key.get((backend, "reference", n))
            ratio = min_ratio = cpu_ratio = mem_ratio = "–"
            if ours and ref and ours.get("seconds") and ref.get("seconds"):
                ratio = f"{ours['seconds'] / ref['seconds']:.2f}"
                min_ratio = f"{ours['seconds_min'] / ref['seconds_min']:.2f}"
                cpu_ratio = f"{ours['cpu_seconds'] / ref['cpu_seconds']:.2f}"
                mem_ratio = f"{ours['peak_mb'] / max(ref['peak_mb'], 1e-9):.2f}"
            lines.append(
                f"| {backend} | {n} | {cell(ours, 'seconds', '.4f')} "
                f"| {cell(ref, 'seconds', '.4f')} | {ratio} | {min_ratio} | {cpu_ratio} "
                f"| {cell(ours, 'peak_mb', '.1f')} | {cell(ref, 'peak_mb', '.1f')} | {mem_ratio} |"
            )
    growth = []
    for backend in backends:
        for impl in ("miram", "reference"):
            times = [by_key.get((backend, impl, n), {}).get("seconds") for n in tokens]
            pairs = [
                (a, b, t0, t1) for a, b, t0, t1 in zip(tokens, tokens[1:], times, times[1:]) if t0 and t1
            ]
            steps = ", ".join(f"{a}→{b}: {t1 / t0:.2f}×" for a, b, t0, t1 in pairs)
            if steps:
                growth.append(f"- {backend} ({impl}) time growth {steps}")
    return "\n".join(lines + [""] + growth)


def _plot(records: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    # One colour per backend: ours solid, its reference package dashed in the same colour.
    for i, backend in enumerate(dict.fromkeys(r["backend"] for r in records)):
        for impl, style in (("miram", "-o"), ("reference", "--s")):
            pts = [
                (r["tokens"], r["seconds"]) for r in records if r["backend"] == backend and r["impl"] == impl
            ]
            pts = [(n, s) for n, s in pts if s]
            if pts:
                ax.plot(*zip(*pts), style, color=f"C{i}", label=f"{backend} ({impl})")
    first = records[0] if records else {}
    title = f"attention, {first.get('dtype', '')}, malloc {first.get('malloc', '')}"
    ax.set(xscale="log", yscale="log", xlabel="tokens N", ylabel="forward+backward s", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_attention(
    tokens: list[int] = [1024, 4096, 16384],  # noqa: B006 (never mutated; shown by --help)
    dim: int = 512,
    heads: int = 16,
    head_dim: int = 32,
    batch: int = 1,
    backends: list[str] | None = None,
    include_reference: bool = True,
    dtype: str = "fp32",
    device: str = "auto",
    repeats: int = 3,
    rounds: int = 3,
    budget_s: float = 60.0,
    threads: int | None = None,
    malloc: str = "system",
    json: str | None = None,
    plot: str | None = None,
) -> list[dict[str, Any]]:
    """Time forward+backward and peak memory of attention backends and their reference packages.

    Args:
        tokens: token counts N.
        dim: model width.
        heads: number of heads.
        head_dim: width per head.
        batch: batch size.
        backends: miram backends (default sdpa, nystrom, linformer, performer; "softmax" materialises
            N x N and is left out by default).
        include_reference: also run the reference package of each approximation.
        dtype: "fp32", or "bf16" / "fp16" under autocast.
        device: "cpu", "cuda" or "auto".
        repeats: timed calls per process after one warm-up.
        rounds: processes per point that has a reference, alternating ours and the reference; a point
            reports the median of its rounds' median times (and the minimum over all calls), so one
            slow moment of a shared machine does not decide a ratio.
        budget_s: per point, time fewer calls when the warm-up shows the repeats would exceed this.
        threads: torch intra-op threads per point (default: torch's default for the machine).
        malloc: CPU allocator policy of each point's process, "system" or "reuse" (see
            :data:`miram.bench.runner.MALLOC_ENV`).
        json: write the records (backend, impl, tokens, seconds, peak_mb, ...) to this path.
        plot: write a log-log plot of time against N to this PNG path.

    Returns:
        the records.
    """

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    tokens = list(tokens)
    backends = backends or ["sdpa", "nystrom", "linformer", "performer"]
    device, device_name = resolve_device(device, threads)
    common = {
        "dim": dim,
        "heads": heads,
        "head_dim": head_dim,
        "batch": batch,
        "dtype": dtype,
        "device": device,
    }
    records: list[dict[str, Any]] = []
    for n in tokens:
        for backend in backends:
            results: dict[str, list[dict[str, Any]]] = {"miram": []}
            if include_reference and backend in REFERENCES:
                installed = importlib.util.find_spec(REFERENCES[backend][0]) is not None
                results["reference"] = (
                    [] if installed else [{"error": f"{REFERENCES[backend][1]} not installed"}]
                )
            timed = [impl for impl, got in results.items() if not got]
            # A pair alternates which side goes first, so a drift in the machine's speed hits both.
            for round_ in range(rounds if len(timed) == 2 else 1):
                for impl in timed[::-1] if round_ % 2 else timed:
                    kwargs = {"backend": backend, "impl": impl, "tokens": n, **common}
                    results[impl].append(
                        run_isolated(
                            "miram.bench.attention:setup_point",
                            kwargs,
                            1,
                            repeats,
                            budget_s,
                            None,
                            threads,
                            malloc,
                        )
                    )
            for impl, got in results.items():
                record: dict[str, Any] = {"backend": backend, "impl": impl, "tokens": n, **common}
                record["device_name"], record["malloc"] = device_name, malloc
                record.update({"seconds": None, "peak_mb": None, **_combine(got)})
                records.append(record)
                status = record.get("error") or f"{record['seconds']:.4f} s, {record['peak_mb']:.1f} MB"
                print(f"  {backend:>10} {impl:>9} N={n:>6}: {status}", flush=True)
    print(
        f"\nattention forward+backward, {device_name}, {dtype}, malloc {malloc}, batch {batch}, dim {dim}, "
        f"{heads}x{head_dim} heads\n"
    )
    print(_markdown(records, tokens))
    if json:
        Path(json).write_text(jsonlib.dumps(records, indent=2))
    if plot:
        _plot(records, plot)
    return records
