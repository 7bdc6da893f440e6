"""The label schema shared by the full-field collections, so one probe config runs on any of them.

Every reader maps what its metadata carries onto these names (a collection fills only some of them):

- ``density``: ACR breast composition A–D (multiclass; VinDr ``DENSITY C``, RSNA ``C``, EMBED ``tissueden``
  1–4, INbreast ``ACR`` 1–4 all land here).
- ``birads``: BI-RADS assessment 0–6 (multiclass; class index = category; INbreast's 4a/4b/4c → 4).
- ``cancer``: malignant finding confirmed in this breast (binary; RSNA ``cancer``, CMMD ``Malignant``, EMBED
  path_severity 0–1).
- ``pathology``: benign / malignant of a biopsied breast (binary; only breasts with a pathology result).
- ``laterality`` (LEFT / RIGHT) and ``view`` (CC / MLO / other).
- collection-specific ones each reader documents (``findings``, ``abnormality``, ``subtype``, ``biopsy``...).
"""

from __future__ import annotations

import re
from typing import Any

from miram.data.cache import LabelSpec

DENSITIES = ("A", "B", "C", "D")
BIRADS = tuple(str(i) for i in range(7))
SIDES = ("LEFT", "RIGHT")
VIEWS = ("CC", "MLO", "other")

COMMON: dict[str, LabelSpec] = {
    "density": LabelSpec("multiclass", list(DENSITIES)),
    "birads": LabelSpec("multiclass", list(BIRADS)),
    "cancer": LabelSpec("binary", ["no", "yes"]),
    "pathology": LabelSpec("binary", ["benign", "malignant"]),
    "laterality": LabelSpec("multiclass", list(SIDES)),
    "view": LabelSpec("multiclass", list(VIEWS)),
}


def density_index(value: Any) -> int | None:
    """``"DENSITY C"``, ``"C"``, ``"c"``, ``3``, ``"3"`` or ``3.0`` -> 2; empty or unknown -> None."""
    text = str(value if value is not None else "").strip().upper().removeprefix("DENSITY").strip()
    if text in DENSITIES:
        return DENSITIES.index(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) - 1 if number in (1.0, 2.0, 3.0, 4.0) else None


def birads_index(value: Any) -> int | None:
    """``"BI-RADS 4"``, ``"4a"``, ``"4C"``, ``4``, ``"4.0"`` -> 4; empty or out of 0–6 -> None."""
    text = str(value if value is not None else "").strip().upper()
    text = re.sub(r"^BI-?RADS\s*", "", text)
    m = re.fullmatch(r"([0-6])(?:\.0+)?[ABC]?", text)
    return int(m.group(1)) if m else None


def side_index(value: Any) -> int | None:
    """``L`` / ``LEFT`` -> 0, ``R`` / ``RIGHT`` -> 1, else None."""
    text = str(value if value is not None else "").strip().upper()
    return {"L": 0, "LEFT": 0, "R": 1, "RIGHT": 1}.get(text)


def side_letter(value: Any) -> str | None:
    """``L`` / ``R`` (the cache's ``laterality`` meta), else None."""
    index = side_index(value)
    return None if index is None else "LR"[index]


def view_index(value: Any) -> int | None:
    """``CC`` -> 0, ``MLO`` -> 1, any other non-empty view (ML, LM, XCCL, ...) -> 2, empty -> None."""
    text = str(value if value is not None else "").strip().upper()
    if not text:
        return None
    return {"CC": 0, "MLO": 1}.get(text, 2)


def common_labels(laterality: Any, view: Any) -> dict[str, Any]:
    """The ``laterality`` and ``view`` labels every film carries."""
    return {"laterality": side_index(laterality), "view": view_index(view)}
