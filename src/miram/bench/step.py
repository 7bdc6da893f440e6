"""``miram bench step``: time and peak memory of one pre-training step of MAE and of MIRAM with each
high-resolution decoder backend, over input sizes (the paper's efficiency comparison).

A step is what training runs: forward (encoder on the visible 25 %, one decoder per scale, norm-pix
losses), backward and an AdamW update. MAE is the input-scale decoder alone; MIRAM adds a ×2 decoder of
the same shape with the named attention, on 4× the tokens. Every point runs in a fresh process
(:mod:`miram.bench.runner`), so peak memory is that configuration's alone; on a GPU it is the allocator's
peak, on a CPU the growth of the resident set.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from miram.attention import AttentionSpec
from miram.bench.runner import autocast_for, resolve_device, run_isolated
from miram.models.decoder import ScaleConfig
from miram.models.masked_autoencoder import MaskedAutoencoder, MaskedAutoencoderConfig
from miram.models.vit import VIT_PRESETS, ViTConfig

# method -> attention backend of the x2 decoder (None: MAE, the input scale only)
METHODS: dict[str, str | None] = {
    "mae": None,
    "miram-sdpa": "sdpa",
    "miram-nystrom": "nystrom",
    "miram-linformer": "linformer",
    "miram-performer": "performer",
}


def build_model(
    method: str,
    size: int,
    encoder: str = "vit_base",
    patch_size: int = 16,
    decoder_depth: int = 8,
    decoder_dim: int = 512,
    decoder_heads: int = 16,
) -> Any:
    """The masked autoencoder of ``method`` for ``size`` × ``size`` inputs (decoders as in the paper)."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; choose from {list(METHODS)}")
    if encoder not in VIT_PRESETS:
        raise ValueError(f"unknown encoder '{encoder}'; choose from {list(VIT_PRESETS)}")

    def scale(factor: int, backend: str) -> ScaleConfig:
        return ScaleConfig(
            factor=factor, depth=decoder_depth, embed_dim=decoder_dim, num_heads=decoder_heads,
            loss_region="masked" if factor == 1 else "all", attention=AttentionSpec(backend),
        )  # fmt: skip

    backend = METHODS[method]
    scales = [scale(1, "sdpa")] + ([scale(2, backend)] if backend is not None else [])
    preset = VIT_PRESETS[encoder]
    vit = ViTConfig(
        img_size=(size, size), patch_size=patch_size,
        embed_dim=preset["embed_dim"], depth=preset["depth"], num_heads=preset["num_heads"],
    )  # fmt: skip
    return MaskedAutoencoder(MaskedAutoencoderConfig(encoder=vit, scales=scales))


def setup_step(
    method: str,
    size: int,
    encoder: str,
    patch_size: int,
    decoder_depth: int,
    decoder_dim: int,
    decoder_heads: int,
    batch: int,
    dtype: str,
    device: str,
) -> Callable[[], None]:
    """Build one model, its optimiser and a batch; return the training step (run by the bench runner)."""
    torch.manual_seed(0)
    model = build_model(method, size, encoder, patch_size, decoder_depth, decoder_dim, decoder_heads)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    h, w = model.config.data_size
    images = torch.randn(batch, model.config.encoder.in_chans, h, w, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, dtype):
            out = model(images)
        out.loss.backward()
        optimizer.step()

    return step


def _markdown(records: list[dict[str, Any]], sizes: list[int]) -> str:
    """One row per (method, input size), with time and memory relative to MAE and to MIRAM-sdpa."""
    by_key = {(r["method"], r["size"]): r for r in records}

    def rel(r: dict[str, Any], peer: dict[str, Any] | None, field: str) -> str:
        if peer is None or not r.get(field) or not peer.get(field):
            return "–"
        return f"{r[field] / peer[field]:.2f}"

    lines = [
        "| method | input | x2 patches | s / step | peak MB | time vs MAE | memory vs MAE "
        "| time vs MIRAM-sdpa | memory vs MIRAM-sdpa |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in dict.fromkeys(r["method"] for r in records):
        for size in sizes:
            r = by_key.get((method, size))
            if r is None:
                continue
            mae, sdpa = by_key.get(("mae", size)), by_key.get(("miram-sdpa", size))
            seconds = f"{r['seconds']:.3f}" if r.get("seconds") else str(r.get("error", "–"))
            peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "–"
            tokens = r["hr_tokens"] if METHODS[method] else "–"
            lines.append(
                f"| {method} | {size} | {tokens} | {seconds} | {peak} | {rel(r, mae, 'seconds')} "
                f"| {rel(r, mae, 'peak_mb')} | {rel(r, sdpa, 'seconds')} | {rel(r, sdpa, 'peak_mb')} |"
            )
    return "\n".join(lines)


def bench_step(
    sizes: list[int] = [112, 224],  # noqa: B006 (never mutated; shown by --help)
    methods: list[str] | None = None,
    encoder: str = "vit_base",
    patch_size: int = 16,
    decoder_depth: int = 8,
    decoder_dim: int = 512,
    decoder_heads: int = 16,
    batch: int = 8,
    dtype: str = "fp32",
    device: str = "auto",
    repeats: int = 3,
    budget_s: float = 120.0,
    threads: int | None = None,
    malloc: str = "system",
    json: str | None = None,
) -> list[dict[str, Any]]:
    """Time one pre-training step (forward, backward, AdamW) and its peak memory per method and size.

    Args:
        sizes: encoder input sides; the x2 decoder reconstructs 2 × side.
        methods: from mae, miram-sdpa, miram-nystrom, miram-linformer, miram-performer (default: all).
        encoder: ViT preset (vit_micro, vit_tiny, vit_small, vit_base, vit_large).
        patch_size: encoder patch size.
        decoder_depth: blocks per decoder (paper: 8).
        decoder_dim: decoder width (paper: 512).
        decoder_heads: decoder heads (paper: 16).
        batch: images per step.
        dtype: "fp32", or "bf16" / "fp16" under autocast.
        device: "cpu", "cuda" or "auto".
        repeats: timed steps per point after one warm-up; the median is reported.
        budget_s: per point, time fewer steps when the warm-up shows the repeats would exceed this.
        threads: torch intra-op threads per point (default: torch's default for the machine).
        malloc: CPU allocator policy of each point's process, "system" or "reuse" (see
            :data:`miram.bench.runner.MALLOC_ENV`).
        json: write the records (method, size, hr_tokens, seconds, peak_mb, ...) to this path.

    Returns:
        the records.
    """

    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    device, device_name = resolve_device(device, threads)
    records = []
    for size in sizes:
        for method in methods:
            kwargs = {
                "method": method, "size": size, "encoder": encoder, "patch_size": patch_size,
                "decoder_depth": decoder_depth, "decoder_dim": decoder_dim, "decoder_heads": decoder_heads,
                "batch": batch, "dtype": dtype, "device": device,
            }  # fmt: skip
            result = run_isolated(
                "miram.bench.step:setup_step", kwargs, 1, repeats, budget_s, None, threads, malloc
            )
            hr_tokens = (2 * size // patch_size) ** 2
            record = {
                "method": method,
                "size": size,
                "hr_tokens": hr_tokens,
                "malloc": malloc,
                **kwargs,
                **result,
            }
            records.append(record)
            shown = f"{record['seconds']:.3f} s" if record.get("seconds") else record.get("error")
            print(f"{method:>16s} input {size}: {shown}, peak {record.get('peak_mb', float('nan')):.0f} MB")
    print(
        f"\npre-training step (forward, backward, AdamW), {device_name}, {dtype}, malloc {malloc}, "
        f"batch {batch}, encoder {encoder}/{patch_size}, "
        f"decoders {decoder_depth}x{decoder_dim}x{decoder_heads}\n"
    )
    print(_markdown(records, list(sizes)))
    if json:
        Path(json).write_text(jsonlib.dumps(records, indent=2))
    return records
