"""Classification metrics through torchmetrics, with percentile-bootstrap confidence intervals.

Scores are probabilities: ``(N,)`` positive-class for binary tasks, ``(N, K)`` for multiclass (rows sum
to 1) and multilabel (independent sigmoids). Targets are class indices ``(N,)`` or multi-hot ``(N, K)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchmetrics.functional.classification as M
from torch import Tensor

Task = Literal["binary", "multiclass", "multilabel"]
METRICS = ("accuracy", "balanced_accuracy", "auroc", "ap")


def classification_metrics(
    probs: Tensor, target: Tensor, task: Task, num_classes: int = 2
) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean per-class recall), macro AUROC and macro AP.

    For multilabel tasks accuracy is the exact-match-free per-label accuracy at 0.5 and balanced accuracy
    the macro mean of per-label balanced accuracies.
    """
    probs, target = probs.float(), target.long()
    if task == "binary":
        out = {
            "accuracy": M.binary_accuracy(probs, target),
            "balanced_accuracy": M.multiclass_accuracy(
                (probs >= 0.5).long(), target, num_classes=2, average="macro"
            ),
            "auroc": M.binary_auroc(probs, target),
            "ap": M.binary_average_precision(probs, target),
        }
    elif task == "multiclass":
        k = num_classes
        out = {
            "accuracy": M.multiclass_accuracy(probs, target, num_classes=k, average="micro"),
            "balanced_accuracy": M.multiclass_accuracy(probs, target, num_classes=k, average="macro"),
            "auroc": M.multiclass_auroc(probs, target, num_classes=k, average="macro"),
            "ap": M.multiclass_average_precision(probs, target, num_classes=k, average="macro"),
        }
    else:
        k = num_classes
        recall = M.multilabel_recall(probs, target, num_labels=k, average="none")
        specificity = M.multilabel_specificity(probs, target, num_labels=k, average="none")
        out = {
            "accuracy": M.multilabel_accuracy(probs, target, num_labels=k, average="macro"),
            "balanced_accuracy": ((recall + specificity) / 2).mean(),
            "auroc": M.multilabel_auroc(probs, target, num_labels=k, average="macro"),
            "ap": M.multilabel_average_precision(probs, target, num_labels=k, average="macro"),
        }
    return {k: float(v) for k, v in out.items()}


def _has_all_classes(target: Tensor, task: Task, num_classes: int) -> bool:
    if task == "multilabel":
        positives = target.sum(0)
        return bool(((positives > 0) & (positives < target.shape[0])).all())
    return int(target.unique().numel()) == (2 if task == "binary" else num_classes)


def bootstrap_ci(
    probs: Tensor,
    target: Tensor,
    task: Task,
    num_classes: int = 2,
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric over resampled test sets.

    Resamples missing a class (where AUROC/AP are undefined) are drawn again, so every interval rests on
    ``num_resamples`` valid resamples.
    """
    g = torch.Generator().manual_seed(seed)
    n = target.shape[0]
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    tries = 0
    while len(values["auroc"]) < num_resamples:
        tries += 1
        if tries > 20 * num_resamples:
            raise ValueError("bootstrap: too few resamples contain every class; the test set is too small")
        idx = torch.randint(0, n, (n,), generator=g)
        if not _has_all_classes(target[idx], task, num_classes):
            continue
        for name, value in classification_metrics(probs[idx], target[idx], task, num_classes).items():
            values[name].append(value)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for name, vals in values.items():
        t = torch.tensor(vals)
        out[name] = (float(t.quantile(lo_q)), float(t.quantile(hi_q)))
    return out


def evaluate(
    probs: Tensor, target: Tensor, task: Task, num_classes: int = 2, num_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Point estimates and 95 % bootstrap intervals: ``{metric: {"value", "lo", "hi"}}``."""
    point = classification_metrics(probs, target, task, num_classes)
    ci = bootstrap_ci(probs, target, task, num_classes, num_resamples, seed=seed)
    return {m: {"value": point[m], "lo": ci[m][0], "hi": ci[m][1]} for m in METRICS}


def format_ci(entry: dict[str, float], digits: int = 3) -> str:
    """``0.812 [0.770, 0.851]``."""
    if any(math.isnan(entry[k]) for k in ("value", "lo", "hi")):
        return "n/a"
    return f"{entry['value']:.{digits}f} [{entry['lo']:.{digits}f}, {entry['hi']:.{digits}f}]"
