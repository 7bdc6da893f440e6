"""Evaluation tasks read from cache label columns.

Any label column of a cache is a task: ``binary`` and ``multiclass`` labels (class indices), ``multilabel``
labels (multi-hot) and ``value`` labels holding small non-negative integers (treated as classes).
"""

from __future__ import annotations

from dataclasses import dataclass

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
