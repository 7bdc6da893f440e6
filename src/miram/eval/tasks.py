"""Evaluation tasks from cache label columns, per-class metrics, and aggregation over patients and seeds.

Any label column of a cache is a task: ``binary`` and ``multiclass`` labels (class indices), ``multilabel``
labels (multi-hot) and ``value`` labels holding small non-negative integers (treated as classes).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchmetrics.functional.classification as M
from torch import Tensor

from miram.data.cache import Cache
from miram.eval.metrics import Task


@dataclass
class TaskSpec:
    """What a label column asks of a classifier.

    Attributes:
        label: label column name.
        task: binary | multiclass | multilabel.
        num_classes: classes (labels for multilabel); 2 for binary.
        classes: class names.
    """

    label: str
    task: Task
    num_classes: int
    classes: list[str]


def task_from_cache(cache: Cache, label: str) -> TaskSpec:
    """The task of ``label`` in ``cache`` (value labels: classes 0..max seen)."""
    if label not in cache.labels:
        raise KeyError(f"no label '{label}' in the cache; available: {sorted(cache.labels)}")
    spec = cache.labels[label]
    if spec.kind in ("binary", "multiclass", "multilabel"):
        classes = list(spec.classes) or ["0", "1"]
        kind: Task = spec.kind
        return TaskSpec(label, kind, len(classes), classes)
    values = {r.labels.get(label) for r in cache.records} - {None}
    if not values or not all(isinstance(v, int) and v >= 0 for v in values):
        raise ValueError(f"value label '{label}' must hold non-negative integers to be used as classes")
    k = max(values) + 1  # type: ignore[type-var, operator]
    return TaskSpec(label, "binary" if k == 2 else "multiclass", k, [str(i) for i in range(k)])


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


def aggregate_by_patient(
    probs: Tensor, target: Tensor, patient_ids: Sequence[str], task: Task
) -> tuple[Tensor, Tensor, list[str]]:
    """Mean probabilities per patient; the patient's target is its most frequent class (binary, multiclass)
    or the union of its labels (multilabel).

    Args:
        probs: ``(N,)`` or ``(N, K)`` per-image probabilities.
        target: ``(N,)`` class indices or ``(N, K)`` multi-hot.
        patient_ids: ``N`` ids, one per row.
        task: the task kind.

    Returns:
        ``(P, ...)`` probabilities, ``(P, ...)`` targets and the ``P`` ids in first-seen order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, pid in enumerate(patient_ids):
        groups[pid].append(i)
    ids = list(groups)
    p = torch.stack([probs[groups[pid]].mean(0) for pid in ids])
    if task == "multilabel":
        t = torch.stack([target[groups[pid]].amax(0) for pid in ids])
    else:
        t = torch.tensor([Counter(target[groups[pid]].tolist()).most_common(1)[0][0] for pid in ids])
    return p, t, ids


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaNs ignored)."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return mean, sd


def aggregate_seeds(results: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "lo", "hi"}}`` of several seeds -> ``{metric: {"mean", "sd", "n", "lo", "hi"}}``
    (``lo``/``hi`` are the mean bootstrap bounds)."""
    out: dict[str, dict[str, float]] = {}
    for metric in results[0] if results else []:
        mean, sd = mean_sd([r[metric]["value"] for r in results])
        lo, _ = mean_sd([r[metric]["lo"] for r in results])
        hi, _ = mean_sd([r[metric]["hi"] for r in results])
        out[metric] = {"mean": mean, "sd": sd, "n": float(len(results)), "lo": lo, "hi": hi}
    return out


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
    """:func:`miram.eval.metrics.evaluate`, with NaN intervals (not an error) when the test set is too small
    for the bootstrap to see every class."""
    from miram.eval.metrics import classification_metrics, evaluate

    try:
        return evaluate(probs, target, task, num_classes, num_resamples, seed, metrics_fn, class_target)
    except ValueError:
        point = (metrics_fn or (lambda p, t: classification_metrics(p, t, task, num_classes)))(probs, target)
        return {m: {"value": v, "lo": math.nan, "hi": math.nan} for m, v in point.items()}


def evaluate_authors_multilabel(
    probs: Tensor, target: Tensor, num_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`miram.eval.metrics.authors_multilabel_metrics` with 95 % bootstrap intervals (NaN when the
    test set is too small); the every-class check looks at the authors' single-label targets."""
    from miram.eval.metrics import authors_multilabel_metrics, single_label_rows

    return evaluate_safe(
        probs, target, "multilabel", target.shape[1], num_resamples, seed,
        metrics_fn=authors_multilabel_metrics, class_target=single_label_rows(target),
    )  # fmt: skip
