"""Lesion descriptors and their malignancy rates for the phantom generator.

Frequencies and P(malignant | descriptor) are computed from the CBIS-DDSM training CSVs (Lee et al.,
Sci Data 4, 170177, 2017; counts in docs/phantoms.md) so that the phantom task has the same case mix and
the same irreducible label noise as the real one: a spiculated mass is malignant 93 % of the time, a
circumscribed one 13 %, fine linear branching calcifications 78 %, punctate 19 %.
Physical sizes follow the BI-RADS Atlas (5th ed.) descriptions: coarse calcifications > 1 mm (up to a few
mm), fine pleomorphic < 0.5 mm, fine linear 0.1-0.3 mm wide, punctate < 0.5 mm, round 0.5-1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Descriptor:
    """One lesion descriptor: how often it occurs and how often it is malignant."""

    name: str
    weight: float  # relative frequency among lesions of its type (CBIS-DDSM train rows)
    p_malignant: float  # P(MALIGNANT | descriptor) in CBIS-DDSM train


MASS_MARGINS = (
    Descriptor("CIRCUMSCRIBED", 352, 0.13),
    Descriptor("ILL_DEFINED", 358, 0.66),
    Descriptor("SPICULATED", 318, 0.93),
    Descriptor("OBSCURED", 243, 0.21),
    Descriptor("MICROLOBULATED", 116, 0.64),
)

CALC_TYPES = (
    Descriptor("PLEOMORPHIC", 735, 0.54),
    Descriptor("PUNCTATE", 199, 0.19),
    Descriptor("LUCENT_CENTER", 219, 0.00),
    Descriptor("ROUND_AND_REGULAR", 167, 0.04),
    Descriptor("AMORPHOUS", 166, 0.39),
    Descriptor("FINE_LINEAR_BRANCHING", 111, 0.78),
    Descriptor("COARSE", 72, 0.00),
)

# Calc distributions the generator can draw; the malignancy comes from the type alone.
CALC_DISTRIBUTIONS = (("CLUSTERED", 770), ("SEGMENTAL", 178), ("LINEAR", 120), ("REGIONAL", 100))

MASS_FRACTION = 1318 / (1318 + 1546)  # masses among CBIS-DDSM train lesions

# Per calcification type: (min, max) size in mm and peak contrast over the background (0-1 scale).
CALC_GEOMETRY: dict[str, tuple[float, float, float]] = {
    "PUNCTATE": (0.15, 0.45, 0.35),
    "ROUND_AND_REGULAR": (0.5, 1.0, 0.40),
    "COARSE": (1.2, 3.0, 0.45),
    "LUCENT_CENTER": (0.8, 2.0, 0.40),
    "AMORPHOUS": (0.08, 0.2, 0.12),
    "PLEOMORPHIC": (0.1, 0.45, 0.40),
    "FINE_LINEAR_BRANCHING": (0.08, 0.2, 0.40),  # width; length is 3-12x the width
}

# BI-RADS density 1-4 -> mean glandular fraction of the background.
DENSITY_GLANDULAR = {1: 0.12, 2: 0.32, 3: 0.55, 4: 0.78}
DENSITY_WEIGHTS = {1: 0.15, 2: 0.40, 3: 0.35, 4: 0.10}

MARGIN_NAMES = [d.name for d in MASS_MARGINS]
CALC_TYPE_NAMES = [d.name for d in CALC_TYPES]
