"""Confusion matrix, ROC and precision-recall figures of test predictions (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics.functional.classification as M
from torch import Tensor

from miram.eval.metrics import Task


def _curves(probs: Tensor, target: Tensor, task: Task, k: int, kind: str) -> list[tuple[Tensor, Tensor]]:
    target = target.long()
    roc = kind == "roc"
    out: Any
    if task == "binary":
        out = M.binary_roc(probs, target) if roc else M.binary_precision_recall_curve(probs, target)
        return [(out[0], out[1])]
    if task == "multiclass":
        fn: Any = M.multiclass_roc if roc else M.multiclass_precision_recall_curve
        out = fn(probs, target, num_classes=k)
    else:
        fn = M.multilabel_roc if roc else M.multilabel_precision_recall_curve
        out = fn(probs, target, num_labels=k)
    return list(zip(out[0], out[1]))


def save_eval_figures(
    probs: Tensor, target: Tensor, task: Task, classes: list[str], out_dir: str | Path, title: str = ""
) -> list[Path]:
    """Write ``confusion.png`` (not for multilabel), ``roc.png`` and ``pr.png`` under ``out_dir``.

    Args:
        probs: ``(N,)`` positive-class (binary) or ``(N, K)`` probabilities.
        target: ``(N,)`` class indices or ``(N, K)`` multi-hot.
        task: the task kind.
        classes: class names.
        out_dir: figure directory (created).
        title: figure title prefix.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = len(classes)
    written: list[Path] = []
    if task != "multilabel":
        pred = (probs >= 0.5).long() if task == "binary" else probs.argmax(-1)
        cm = M.multiclass_confusion_matrix(pred, target.long(), num_classes=k)
        fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
        ax.imshow(cm.numpy(), cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center")
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} confusion matrix".strip())
        fig.tight_layout()
        written.append(out / "confusion.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    names = [classes[-1]] if task == "binary" else classes
    for kind, (xl, yl) in {
        "roc": ("false positive rate", "true positive rate"),
        "pr": ("recall", "precision"),
    }.items():
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for name, (a, b) in zip(names, _curves(probs, target, task, k, kind)):
            x, y = (a, b) if kind == "roc" else (b, a)  # PR curves come as (precision, recall)
            ax.plot(torch.as_tensor(x).numpy(), torch.as_tensor(y).numpy(), label=name)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{title} {kind.upper()}".strip())
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / f"{kind}.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
