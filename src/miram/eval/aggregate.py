"""Results combined over images of one patient, and over seeds of one comparison."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from miram.eval.metrics import Task


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
