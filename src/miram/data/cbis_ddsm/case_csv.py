"""The four CBIS-DDSM case-description CSVs, read with every known trap handled.

Traps (``docs/cbis-ddsm.md`` §5): ``breast_density`` (mass) vs ``breast density`` (calc); columns chosen by
name, never position; literal ``NA`` is a category (kept, never NaN); every cell stripped, including the
bare newline inside quoted path cells; compound descriptors split on ``-``, de-duplicated and sorted
(``OBSCURED-CIRCUMSCRIBED`` == ``CIRCUMSCRIBED-OBSCURED``); ``LUCENT_CENTERED`` → ``LUCENT_CENTER``;
density or subtlety ``0`` → unknown (None); ``BENIGN_WITHOUT_CALLBACK`` kept as raw pathology and counted
benign by :attr:`Lesion.malignant`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

PATHOLOGIES = ("BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT")
MASS_SHAPES = (
    "IRREGULAR", "OVAL", "LOBULATED", "ROUND", "ARCHITECTURAL_DISTORTION", "ASYMMETRIC_BREAST_TISSUE",
    "FOCAL_ASYMMETRIC_DENSITY", "LYMPH_NODE",
)  # fmt: skip
# paper.md §5.2 order
MASS_MARGINS = ("ILL_DEFINED", "CIRCUMSCRIBED", "SPICULATED", "MICROLOBULATED", "OBSCURED")
CALC_TYPES = (
    "PLEOMORPHIC", "AMORPHOUS", "PUNCTATE", "LUCENT_CENTER", "FINE_LINEAR_BRANCHING", "VASCULAR", "COARSE",
    "ROUND_AND_REGULAR", "EGGSHELL", "DYSTROPHIC", "LARGE_RODLIKE", "SKIN", "MILK_OF_CALCIUM",
)  # fmt: skip
CALC_DISTRIBUTIONS = ("CLUSTERED", "SEGMENTAL", "REGIONAL", "LINEAR", "DIFFUSELY_SCATTERED")
SYNONYMS = {"LUCENT_CENTERED": "LUCENT_CENTER"}
NA = "NA"

COMMON_COLUMNS = (
    "patient id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "assessment", "pathology", "subtlety", "image file path", "roi mask file path",
)  # fmt: skip
MASS_COLUMNS = ("mass shape", "mass margins")
CALC_COLUMNS = ("calc type", "calc distribution")
OPTIONAL_COLUMNS = ("cropped image file path",)


class CsvError(ValueError):
    """A CSV that cannot be used at all (missing file or column); the message names the file."""


@dataclass(frozen=True)
class Lesion:
    """One CSV row: one lesion seen in one view.

    Attributes:
        patient_id: ``P_#####``.
        split: official split, ``train`` or ``test``.
        abnormality_type: ``mass`` or ``calcification``.
        abnormality_id: 1-based lesion number inside the image.
        side: ``LEFT`` / ``RIGHT``; view: ``CC`` / ``MLO``.
        pathology: raw 3-class value (``BENIGN_WITHOUT_CALLBACK`` kept).
        density, assessment, subtlety: integers, None when out of range (density/subtlety 0).
        mass_shape, mass_margins, calc_type, calc_distribution: sorted atomic tokens; ``("NA",)`` for the
            literal NA category; empty for the other abnormality type.
        image_path, crop_path, roi_path: stripped CSV paths ``Subject/StudyUID/SeriesUID/file``.
        source: ``file.csv:line`` for messages.
    """

    patient_id: str
    split: str
    abnormality_type: str
    abnormality_id: int
    side: str
    view: str
    pathology: str
    density: int | None
    assessment: int | None
    subtlety: int | None
    mass_shape: tuple[str, ...]
    mass_margins: tuple[str, ...]
    calc_type: tuple[str, ...]
    calc_distribution: tuple[str, ...]
    image_path: str
    crop_path: str
    roi_path: str
    source: str

    @property
    def malignant(self) -> bool:
        """Binary pathology: only MALIGNANT is positive (BENIGN_WITHOUT_CALLBACK → benign)."""
        return self.pathology == "MALIGNANT"

    @property
    def subject(self) -> str:
        """Full-image subject folder, e.g. ``Mass-Training_P_00001_LEFT_CC``."""
        return self.image_path.split("/")[0]

    @property
    def key(self) -> str:
        """Unique lesion key: the subject plus the abnormality id (the lesion subject folder name)."""
        return f"{self.subject}_{self.abnormality_id}"


def normalise_column(name: str) -> str:
    """``breast_density`` / ``Breast Density `` / ``patient_id`` → ``breast density`` / ``patient id``."""
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def split_descriptor(value: str, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    """Split a compound descriptor into sorted unique atomic tokens.

    Args:
        value: stripped cell, e.g. ``OBSCURED-CIRCUMSCRIBED`` or ``NA``; empty means NA (pandas round trips).
        vocabulary: the allowed atomic tokens (``NA`` is always allowed).

    Returns:
        sorted tokens, e.g. ``("CIRCUMSCRIBED", "OBSCURED")``.

    Raises:
        ValueError: a token outside the vocabulary (the message names it).
    """
    if value in ("", NA):
        return (NA,)
    tokens = {SYNONYMS.get(t.strip(), t.strip()) for t in value.split("-") if t.strip()}
    unknown = sorted(t for t in tokens if t not in vocabulary and t != NA)
    if unknown:
        raise ValueError(f"unknown value {'-'.join(unknown)!r} in {value!r}")
    return tuple(sorted(tokens))


def _int(value: str, name: str, lo: int, hi: int, zero_unknown: bool = False) -> int | None:
    try:
        v = int(float(value))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if v == 0 and zero_unknown:
        return None  # documented out-of-range 0 (density P_01743, subtlety P_00710): keep row, unknown value
    if not lo <= v <= hi:
        raise ValueError(f"unknown {name} value {v} (expected {lo}..{hi})")
    return v


def _split_of(path: Path, image_path: str) -> str | None:
    name = path.name.lower()
    if "train" in name:
        return "train"
    if "test" in name:
        return "test"
    subject = image_path.split("/")[0]
    return "train" if "-Training" in subject else "test" if "-Test" in subject else None


def read_case_csv(path: str | Path) -> tuple[list[Lesion], list[tuple[str, str]]]:
    """Read one case-description CSV.

    Args:
        path: a ``{mass,calc}_case_description_{train,test}_set.csv`` or a copy with the same columns.

    Returns:
        ``(lesions, problems)``: the usable rows, and ``(where, reason)`` for rows that are not.

    Raises:
        CsvError: unreadable file, or a required column missing.
    """
    path = Path(path)
    lesions: list[Lesion] = []
    problems: list[tuple[str, str]] = []
    try:
        # newline="" lets the csv module keep the bare LF inside quoted path cells with its cell
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [normalise_column(c) for c in next(reader, [])]
            if not header:
                raise CsvError(f"{path}: empty CSV")
            col = {name: i for i, name in enumerate(header)}
            kind = "mass" if "mass shape" in col or "mass margins" in col else "calc"
            required = COMMON_COLUMNS + (MASS_COLUMNS if kind == "mass" else CALC_COLUMNS)
            missing = [c for c in required if c not in col]
            if missing:
                raise CsvError(f"{path}: missing column(s) {missing}; found {header}")
            start = reader.line_num + 1
            for row in reader:
                where, start = f"{path}:{start}", reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                cells = {name: (row[i].strip() if i < len(row) else "") for name, i in col.items()}
                try:
                    lesions.append(_lesion(cells, kind, path, where))
                except ValueError as e:
                    problems.append((where, str(e)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CsvError(f"{path}: cannot read CSV ({e})") from e
    return lesions, problems


def _lesion(c: dict[str, str], kind: str, path: Path, where: str) -> Lesion:
    pathology = c["pathology"].upper()
    if pathology not in PATHOLOGIES:
        raise ValueError(f"unknown pathology {c['pathology']!r} (expected one of {PATHOLOGIES})")
    abn_type = c["abnormality type"].lower()
    expected = "mass" if kind == "mass" else "calcification"
    if abn_type != expected:
        raise ValueError(f"unknown abnormality type {c['abnormality type']!r} in a {kind} file")
    side, view = c["left or right breast"].upper(), c["image view"].upper()
    if side not in ("LEFT", "RIGHT"):
        raise ValueError(f"unknown side {c['left or right breast']!r}")
    if view not in ("CC", "MLO"):
        raise ValueError(f"unknown view {c['image view']!r}")
    for name in ("image file path", "roi mask file path"):
        if len(c[name].split("/")) < 3:
            raise ValueError(f"{name} {c[name]!r} is not Subject/StudyUID/SeriesUID/file")
    split = _split_of(path, c["image file path"])
    if split is None:
        raise ValueError(f"cannot tell train from test for {c['image file path']!r}")
    abn_id = _int(c["abnormality id"], "abnormality id", 1, 99)
    assert abn_id is not None
    return Lesion(
        patient_id=c["patient id"],
        split=split,
        abnormality_type=abn_type,
        abnormality_id=abn_id,
        side=side,
        view=view,
        pathology=pathology,
        density=_int(c["breast density"], "breast density", 1, 4, zero_unknown=True),
        assessment=_int(c["assessment"], "assessment", 0, 5),
        subtlety=_int(c["subtlety"], "subtlety", 1, 5, zero_unknown=True),
        mass_shape=split_descriptor(c["mass shape"], MASS_SHAPES) if kind == "mass" else (),
        mass_margins=split_descriptor(c["mass margins"], MASS_MARGINS) if kind == "mass" else (),
        calc_type=split_descriptor(c["calc type"], CALC_TYPES) if kind == "calc" else (),
        calc_distribution=split_descriptor(c["calc distribution"], CALC_DISTRIBUTIONS)
        if kind == "calc"
        else (),
        image_path=c["image file path"],
        crop_path=c.get("cropped image file path", ""),
        roi_path=c["roi mask file path"],
        source=where,
    )


def find_case_csvs(csv_dir: str | Path) -> list[Path]:
    """The case-description CSVs in ``csv_dir`` (sorted); raises CsvError when there are none."""
    d = Path(csv_dir)
    if not d.is_dir():
        raise CsvError(f"{d}: CSV directory not found")
    found = sorted(p for p in d.glob("*.csv") if "case_description" in p.name.lower())
    if not found:
        raise CsvError(f"{d}: no *case_description*.csv files (expected the four CBIS-DDSM CSVs)")
    return found


def read_case_csvs(csv_dir: str | Path) -> tuple[list[Lesion], list[tuple[str, str]]]:
    """Read every case-description CSV in ``csv_dir``; duplicate lesion keys are reported as problems."""
    lesions: list[Lesion] = []
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for path in find_case_csvs(csv_dir):
        rows, bad = read_case_csv(path)
        problems += bad
        for lesion in rows:
            if lesion.key in seen:
                problems.append(
                    (lesion.source, f"duplicate lesion {lesion.key} (first at {seen[lesion.key]})")
                )
                continue
            seen[lesion.key] = lesion.source
            lesions.append(lesion)
    return lesions, problems
