"""Classification metrics through torchmetrics, with percentile-bootstrap confidence intervals.

Point metrics (:func:`classification_metrics`, :func:`per_class_metrics`, the MIRAM authors' multi-label
scoring), their bootstrap intervals (:func:`bootstrap_ci`, :func:`evaluate`) and :func:`evaluate_safe`, which
gives NaN intervals instead of an error when a test set is too small to resample.

Scores are probabilities: ``(N,)`` positive-class for binary tasks, ``(N, K)`` for multiclass (rows sum
to 1) and multilabel (independent sigmoids). Targets are class indices ``(N,)`` or multi-hot ``(N, K)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
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


def authors_multilabel_metrics(probs: Tensor, target: Tensor) -> dict[str, float]:
    """A multi-label task scored the way the MIRAM authors' code scores mass margins (paper.md §5.5).

    Their code treats the task as single-label: a sample's class index is its label when it has exactly one,
    and a combined index otherwise, which one-vs-rest binarisation over the K atomic classes turns into an
    all-negative row. Scores are the softmax over the K logits. Accuracy compares the argmax with that index,
    so samples with a combined label always count as errors; balanced accuracy is the mean recall of the K
    classes. Macro AUC is the scikit-learn tutorial's: per-class ROC curves, TPRs interpolated onto the union
    of the FPRs, averaged, then the area. The multi-hot metrics of :func:`classification_metrics` are the
    correct ones; these exist so that numbers can be set beside the paper's.

    Args:
        probs: ``(N, K)`` independent sigmoid probabilities.
        target: ``(N, K)`` multi-hot.
    """
    k = target.shape[1]
    target = target.long()
    single = target.sum(1) == 1
    index = torch.where(single, target.argmax(1), torch.full_like(single, k, dtype=torch.long))
    binarised = single_label_rows(target)
    scores = torch.logit(probs.double(), eps=1e-7).softmax(1).float()
    hits = scores.argmax(1) == index
    recalls = [hits[index == c].float().mean() for c in range(k) if bool((index == c).any())]
    curves = [M.binary_roc(scores[:, c], binarised[:, c]) for c in range(k)]
    grid = np.unique(np.concatenate([fpr.numpy() for fpr, _, _ in curves]))
    mean_tpr = np.mean([np.interp(grid, fpr.numpy(), tpr.numpy()) for fpr, tpr, _ in curves], axis=0)
    return {
        "accuracy": float(hits.float().mean()),
        "balanced_accuracy": float(torch.stack(recalls).mean()),
        "auroc": float(np.trapezoid(mean_tpr, grid)),
        "ap": float(M.multilabel_average_precision(scores, binarised, num_labels=k, average="macro")),
    }


def single_label_rows(target: Tensor) -> Tensor:
    """Multi-hot ``(N, K)`` with the rows holding more than one label set to zero (the authors' targets)."""
    target = target.long()
    return torch.where(target.sum(1, keepdim=True) == 1, target, torch.zeros_like(target))


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
    metrics_fn: Callable[[Tensor, Tensor], dict[str, float]] | None = None,
    class_target: Tensor | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric over resampled test sets.

    Resamples missing a class (where AUROC/AP are undefined) are drawn again, so every interval rests on
    ``num_resamples`` valid resamples. ``metrics_fn(probs, target)`` replaces
    :func:`classification_metrics`; ``class_target`` (default ``target``) is what that check looks at.
    """
    if metrics_fn is None:
        metrics_fn = lambda p, t: classification_metrics(p, t, task, num_classes)  # noqa: E731
    check = target if class_target is None else class_target
    g = torch.Generator().manual_seed(seed)
    n = target.shape[0]
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    tries = 0
    while len(values["auroc"]) < num_resamples:
        tries += 1
        if tries > 20 * num_resamples:
            raise ValueError("bootstrap: too few resamples contain every class; the test set is too small")
        idx = torch.randint(0, n, (n,), generator=g)
        if not _has_all_classes(check[idx], task, num_classes):
            continue
        for name, value in metrics_fn(probs[idx], target[idx]).items():
            values[name].append(value)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for name, vals in values.items():
        t = torch.tensor(vals)
        out[name] = (float(t.quantile(lo_q)), float(t.quantile(hi_q)))
    return out


def evaluate(
    probs: Tensor,
    target: Tensor,
    task: Task,
    num_classes: int = 2,
    num_resamples: int = 1000,
    seed: int = 0,
    metrics_fn: Callable[[Tensor, Tensor], dict[str, float]] | None = None,
    class_target: Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Point estimates and 95 % bootstrap intervals: ``{metric: {"value", "lo", "hi"}}``.

    ``metrics_fn`` and ``class_target`` as in :func:`bootstrap_ci`.
    """
    point = (metrics_fn or (lambda p, t: classification_metrics(p, t, task, num_classes)))(probs, target)
    ci = bootstrap_ci(
        probs, target, task, num_classes, num_resamples, seed=seed, metrics_fn=metrics_fn,
        class_target=class_target,
    )  # fmt: skip
    return {m: {"value": point[m], "lo": ci[m][0], "hi": ci[m][1]} for m in METRICS}


def per_class_metrics(probs: Tensor, target: Tensor, task: Task, num_classes: int) -> dict[str, list[float]]:
    """One-vs-rest AUROC and AP per class (binary: the positive class only)."""
    target = target.long()
    if task == "binary":
        return {
            "auroc": [float(M.binary_auroc(probs, target))],
            "ap": [float(M.binary_average_precision(probs, target))],
        }
    if task == "multiclass":
        auroc = M.multiclass_auroc(probs, target, num_classes=num_classes, average="none")
        ap = M.multiclass_average_precision(probs, target, num_classes=num_classes, average="none")
    else:
        auroc = M.multilabel_auroc(probs, target, num_labels=num_classes, average="none")
        ap = M.multilabel_average_precision(probs, target, num_labels=num_classes, average="none")
    return {"auroc": [float(v) for v in auroc], "ap": [float(v) for v in ap]}


def evaluate_safe(
    probs: Tensor,
    target: Tensor,
    task: Task,
    num_classes: int,
    num_resamples: int = 1000,
    seed: int = 0,
    metrics_fn: Callable[[Tensor, Tensor], dict[str, float]] | None = None,
    class_target: Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate`, with NaN intervals (not an error) when the test set is too small
    for the bootstrap to see every class."""
    try:
        return evaluate(probs, target, task, num_classes, num_resamples, seed, metrics_fn, class_target)
    except ValueError:
        point = (metrics_fn or (lambda p, t: classification_metrics(p, t, task, num_classes)))(probs, target)
        return {m: {"value": v, "lo": math.nan, "hi": math.nan} for m, v in point.items()}


def evaluate_authors_multilabel(
    probs: Tensor, target: Tensor, num_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`authors_multilabel_metrics` with 95 % bootstrap intervals (NaN when the
    test set is too small); the every-class check looks at the authors' single-label targets."""
    return evaluate_safe(
        probs, target, "multilabel", target.shape[1], num_resamples, seed,
        metrics_fn=authors_multilabel_metrics, class_target=single_label_rows(target),
    )  # fmt: skip


def format_ci(entry: dict[str, float], digits: int = 3) -> str:
    """``0.812 [0.770, 0.851]``."""
    if any(math.isnan(entry[k]) for k in ("value", "lo", "hi")):
        return "n/a"
    return f"{entry['value']:.{digits}f} [{entry['lo']:.{digits}f}, {entry['hi']:.{digits}f}]"
