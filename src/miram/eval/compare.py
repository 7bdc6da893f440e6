"""``miram compare --run RUN_DIR``: the paper-style table (method x metric, with intervals) and a figure.

Reads ``summary.json`` of evaluation runs (directories are searched recursively), groups runs by
(protocol, collection and label, group) and reports one seed as ``value [95 % CI]`` and several seeds as
``mean ± sd`` with the mean bootstrap interval.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from miram.eval.aggregate import aggregate_seeds
from miram.eval.metrics import METRICS

NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Bal. acc.", "auroc": "Macro AUC", "ap": "Macro AP"}


def load_summaries(runs: list[str]) -> list[dict[str, Any]]:
    """Evaluation summaries found in ``runs`` (run directories, parents of run directories, or files)."""
    out = []
    for r in runs:
        p = Path(r)
        files = [p] if p.is_file() else sorted(p.rglob("summary.json"))
        for f in files:
            s = json.loads(f.read_text())
            if s.get("kind") in ("probe", "finetune") and "metrics" in s:
                out.append(s)
    return out


def summarise(
    summaries: list[dict[str, Any]], key: str = "metrics"
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(kind, label, group) -> {metric: {"mean", "sd", "n", "lo", "hi"}}`` over seeds; ``label`` is
    ``"<collection> / <label>"`` for runs that name their collection: each collection gets its own table."""
    groups: dict[tuple[str, str, str], list[dict[str, dict[str, float]]]] = defaultdict(list)
    for s in summaries:
        if key in s:
            label = f"{s['collection']} / {s['label']}" if s.get("collection") else s["label"]
            groups[(s["kind"], label, s["group"])].append(s[key])
    return {k: aggregate_seeds(v) for k, v in groups.items()}


def _cell(e: dict[str, float]) -> str:
    if e["n"] > 1:
        return f"{e['mean']:.3f} ± {e['sd']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"
    return f"{e['mean']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"


def markdown_table(table: dict[tuple[str, str, str], dict[str, Any]], order: list[str] | None = None) -> str:
    """One Markdown table per (protocol, label); rows are groups, columns metrics."""
    blocks = []
    for kind, label in sorted({(k[0], k[1]) for k in table}):
        rows = [k for k in table if k[:2] == (kind, label)]
        rows.sort(key=lambda k: (order.index(k[2]) if order and k[2] in order else len(order or []), k[2]))
        n = int(max(table[k]["auroc"]["n"] for k in rows))
        lines = [
            f"**{kind}, `{label}`** ({n} seed{'s' if n > 1 else ''}; mean ± sd [mean bootstrap 95 % CI])",
            "",
            "| Method | " + " | ".join(NAMES[m] for m in METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        best = {m: max(table[k][m]["mean"] for k in rows) for m in METRICS}
        for k in rows:
            cells = []
            for m in METRICS:
                c = _cell(table[k][m])
                cells.append(f"**{c}**" if table[k][m]["mean"] == best[m] and len(rows) > 1 else c)
            lines.append(f"| {k[2]} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def save_figure(table: dict[tuple[str, str, str], dict[str, Any]], out: Path, metric: str = "auroc") -> Path:
    """Bar chart of ``metric`` (mean ± sd) per group, one panel per (protocol, label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(k[0], k[1]) for k in table})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (kind, label) in zip(axes[0], panels):
        rows = sorted(k for k in table if k[:2] == (kind, label))
        means = [table[k][metric]["mean"] for k in rows]
        sds = [table[k][metric]["sd"] for k in rows]
        ax.bar(range(len(rows)), means, yerr=sds, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), [k[2] for k in rows], rotation=30, ha="right")
        ax.set_ylabel(NAMES[metric])
        ax.set_title(f"{kind}: {label}")
        ax.set_ylim(min(0.4, min(means) - 0.05), 1.0)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def compare(
    run: list[str] | str,
    out: str | None = None,
    per_patient: bool = False,
    knn: bool = False,
    authors_scoring: bool = False,
) -> str:
    """Print the comparison table of evaluation runs, and write ``compare.md`` / ``compare.png`` to ``out``.

    Args:
        run: evaluation run directories (or parents of them) holding ``summary.json``: one path, or several
            as ``--run A --run+ B`` or ``--run [A,B]``.
        out: directory for ``compare.md`` and ``compare.png``; nothing written when None.
        per_patient: tabulate the per-patient metrics instead of per-image ones.
        knn: tabulate the kNN metrics of probe runs instead.
        authors_scoring: tabulate multi-label runs under the MIRAM authors' scoring instead
            (:func:`miram.eval.metrics.authors_multilabel_metrics`).

    Returns:
        The Markdown table.
    """
    runs = [run] if isinstance(run, str) else list(run)
    summaries = load_summaries(runs)
    if not summaries:
        raise SystemExit(f"miram compare: no probe/finetune summary.json under {runs}")
    key = "metrics"
    if knn or authors_scoring or per_patient:
        key = "knn" if knn else "authors_scoring" if authors_scoring else "per_patient"
    table = summarise(summaries, key)
    if not table:
        raise SystemExit(f"miram compare: no run under {runs} has '{key}' metrics")
    if knn:
        table = {("knn", k[1], k[2]): v for k, v in table.items()}
    if authors_scoring:
        table = {(f"{k[0]} (authors' scoring)", k[1], k[2]): v for k, v in table.items()}
    text = markdown_table(table)
    print(text)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "compare.md").write_text(text)
        save_figure(table, Path(out) / "compare.png")
    return text
