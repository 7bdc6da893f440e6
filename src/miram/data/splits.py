"""Patient-grouped, stratified, seeded split draws shared by every ``prepare`` command."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

import numpy as np


class Assigned(Protocol):
    """Anything with a split and a patient (a cache record, a film to prepare)."""

    split: str
    patient_id: str


def split_report(items: Iterable[Assigned]) -> dict[str, dict[str, int]]:
    """``{split: {"patients", "images"}}``: what a patient-grouped split should show."""
    out: dict[str, dict[str, int]] = {}
    chosen = list(items)
    for split in ("train", "val", "test"):
        these = [r for r in chosen if r.split == split]
        if these:
            out[split] = {"patients": len({r.patient_id for r in these}), "images": len(these)}
    return out


def draw_splits(
    strata: dict[str, str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign each patient to train / val / test, the same share of every stratum.

    Args:
        strata: patient id -> stratum (e.g. the patient's worst label; ``""`` when unlabelled).
        val_fraction: share of each stratum's patients drawn for ``val``.
        test_fraction: share drawn for ``test``.
        seed: seed of the draw (the result is a function of ``strata``, the fractions and ``seed`` alone).

    Returns:
        patient id -> split.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for pid, stratum in strata.items():
        groups[stratum].append(pid)
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for stratum in sorted(groups):
        pids = sorted(groups[stratum])
        order = rng.permutation(len(pids))
        n_test, n_val = int(round(test_fraction * len(pids))), int(round(val_fraction * len(pids)))
        for rank, i in enumerate(order):
            split_of[pids[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return split_of
