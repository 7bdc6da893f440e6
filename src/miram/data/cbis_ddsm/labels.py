"""CBIS-DDSM label schema and patient-grouped splits.

Labels (``cbis-ddsm.md`` §5, ``paper.md`` §5.2): ``pathology`` (binary, BENIGN_WITHOUT_CALLBACK → benign),
``pathology3`` (raw 3 classes), ``type_pathology`` (the paper's 4 classes), ``lesion_type`` (mass /
calcification / background tile), multi-label ``mass_shape``, ``mass_margins``, ``calc_type``,
``calc_distribution`` over atomic values (literal NA → unknown, so ``Cache.indices(label=...)`` drops it as
the paper does), ``birads`` (class index = assessment), ``density`` and ``subtlety`` (index = value − 1,
out-of-range 0 → unknown), ``laterality``, ``view``.

Splits: the official test split is kept as is; ``val`` is drawn from official-train *patients*, stratified by
(any malignant lesion, has mass, has calc) and seeded. Patients present in both official splits are reported
and their records get ``pretrain=False``; test records are never in pre-training pools either.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from miram.data.cache import LabelSpec
from miram.data.cbis_ddsm.case_csv import (
    CALC_DISTRIBUTIONS,
    CALC_TYPES,
    MASS_MARGINS,
    MASS_SHAPES,
    NA,
    PATHOLOGIES,
    Lesion,
)

TYPE_PATHOLOGY = ("BENIGN_MASS", "MALIGNANT_MASS", "BENIGN_CALC", "MALIGNANT_CALC")
LESION_TYPES = ("mass", "calcification", "background")
SIDES = ("LEFT", "RIGHT")
VIEWS = ("CC", "MLO")

LABELS: dict[str, LabelSpec] = {
    "pathology": LabelSpec("binary", ["benign", "malignant"]),
    "pathology3": LabelSpec("multiclass", list(PATHOLOGIES)),
    "type_pathology": LabelSpec("multiclass", list(TYPE_PATHOLOGY)),
    "lesion_type": LabelSpec("multiclass", list(LESION_TYPES)),
    "mass_shape": LabelSpec("multilabel", list(MASS_SHAPES)),
    "mass_margins": LabelSpec("multilabel", list(MASS_MARGINS)),
    "calc_type": LabelSpec("multilabel", list(CALC_TYPES)),
    "calc_distribution": LabelSpec("multilabel", list(CALC_DISTRIBUTIONS)),
    "birads": LabelSpec("multiclass", [str(i) for i in range(6)]),
    "density": LabelSpec("multiclass", ["1", "2", "3", "4"]),
    "subtlety": LabelSpec("multiclass", ["1", "2", "3", "4", "5"]),
    "laterality": LabelSpec("multiclass", list(SIDES)),
    "view": LabelSpec("multiclass", list(VIEWS)),
}


def _multi(tokens: tuple[str, ...], vocabulary: tuple[str, ...]) -> list[int] | None:
    if not tokens or tokens == (NA,):
        return None
    return sorted(vocabulary.index(t) for t in tokens if t in vocabulary) or None


def lesion_labels(lesion: Lesion) -> dict[str, Any]:
    """Label name → class index / index list / None for one lesion (schema: :data:`LABELS`)."""
    is_mass = lesion.abnormality_type == "mass"
    return {
        "pathology": int(lesion.malignant),
        "pathology3": PATHOLOGIES.index(lesion.pathology),
        "type_pathology": (0 if is_mass else 2) + int(lesion.malignant),
        "lesion_type": 0 if is_mass else 1,
        "mass_shape": _multi(lesion.mass_shape, MASS_SHAPES),
        "mass_margins": _multi(lesion.mass_margins, MASS_MARGINS),
        "calc_type": _multi(lesion.calc_type, CALC_TYPES),
        "calc_distribution": _multi(lesion.calc_distribution, CALC_DISTRIBUTIONS),
        "birads": lesion.assessment,
        "density": None if lesion.density is None else lesion.density - 1,
        "subtlety": None if lesion.subtlety is None else lesion.subtlety - 1,
        "laterality": SIDES.index(lesion.side),
        "view": VIEWS.index(lesion.view),
    }


def tile_labels(lesion: Lesion) -> dict[str, Any]:
    """Labels of a background tile of the image holding ``lesion``: image-level facts only."""
    labels: dict[str, Any] = {name: None for name in LABELS}
    labels.update(
        lesion_type=LESION_TYPES.index("background"),
        density=None if lesion.density is None else lesion.density - 1,
        laterality=SIDES.index(lesion.side),
        view=VIEWS.index(lesion.view),
    )
    return labels


def lesion_meta(lesion: Lesion) -> dict[str, Any]:
    """Raw CSV values and UIDs kept next to the labels (provenance, other label mappings)."""
    parts = lesion.image_path.split("/")
    return {
        "abnormality_type": lesion.abnormality_type,
        "abnormality_id": lesion.abnormality_id,
        "pathology": lesion.pathology,
        "assessment": lesion.assessment,
        "mass_shape": "-".join(lesion.mass_shape),
        "mass_margins": "-".join(lesion.mass_margins),
        "calc_type": "-".join(lesion.calc_type),
        "calc_distribution": "-".join(lesion.calc_distribution),
        "side": lesion.side,
        "view": lesion.view,
        "subject": lesion.subject,
        "study_uid": parts[1],
        "series_uid": parts[2],
        "official_split": lesion.split,
        "csv": lesion.source,
    }


def cross_split_patients(lesions: list[Lesion]) -> list[str]:
    """Patients with lesions in both the official train and test split (31 in CBIS-DDSM)."""
    train = {les.patient_id for les in lesions if les.split == "train"}
    test = {les.patient_id for les in lesions if les.split == "test"}
    return sorted(train & test)


def val_patients(lesions: list[Lesion], val_fraction: float, seed: int) -> set[str]:
    """Official-train patients drawn for validation, stratified by patient profile and seeded.

    Args:
        lesions: all lesions (test lesions are ignored).
        val_fraction: share of train patients per stratum (rounded; 0 → none).
        seed: the draw's seed; the same lesions and seed give the same patients.

    Returns:
        the validation patient ids.
    """
    profile: dict[str, set[str]] = defaultdict(set)
    for les in lesions:
        if les.split == "train":
            profile[les.patient_id].add("M" if les.malignant else "B")
            profile[les.patient_id].add(les.abnormality_type)
    strata: dict[tuple[bool, bool, bool], list[str]] = defaultdict(list)
    for pid, tags in profile.items():
        strata[("M" in tags, "mass" in tags, "calcification" in tags)].append(pid)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for key in sorted(strata):
        pids = sorted(strata[key])
        n = int(round(val_fraction * len(pids)))
        chosen.update(pids[i] for i in rng.permutation(len(pids))[:n])
    return chosen


def record_split(lesion: Lesion, val: set[str]) -> str:
    """``test`` for the official test split, else ``val`` or ``train`` by patient."""
    if lesion.split == "test":
        return "test"
    return "val" if lesion.patient_id in val else "train"
