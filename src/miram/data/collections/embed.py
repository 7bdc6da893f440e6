"""``miram prepare embed``: the EMory BrEast imaging Dataset (EMBED) open release on AWS → a cache of films.

Layout (as the AWS Open Data bucket ships it)::

    <root>/images/cohort_<n>/<empi_anon>/<study>/<SOPInstanceUID>.dcm
    <root>/tables/EMBED_OpenData_metadata.csv     one row per FILE
    <root>/tables/EMBED_OpenData_clinical.csv     one row per FINDING

The tables are looked for in ``<root>/tables/`` then ``<root>/``; ``metadata`` / ``clinical`` point elsewhere.

Metadata columns read: ``anon_dicom_path``, ``empi_anon``, ``acc_anon``, ``FinalImageType`` (``2D`` /
``cview``; other types are never kept), ``ImageLateralityFinal`` (L / R), ``ViewPosition``, ``spot_mag`` (1 =
spot compression or magnification view, empty / 0 = full field), ``ROI_coords`` (``DCM_ROI_coords`` in the
datathon tables; never the mirrored ``PNG_ROI_coords``) and, when present, ``match_level``
(``ROI_match_level``), ``num_roi``, ``study_date_anon``, ``cohort_num``.
Clinical columns read: ``empi_anon``, ``acc_anon``, ``side``, ``asses``, ``tissueden``, ``path_severity`` and,
when present, ``bside``, ``desc``, ``study_date_anon``.

Image files: ``anon_dicom_path`` holds each file's path as the publisher wrote it (an absolute path on their
system, ``/mnt/NAS2/mammo/anon_dicom/cohort_1/...``, or ``./images/cohort_1/...``). Its part from the
``cohort_<n>`` folder onwards is looked for as ``<root>/<part>`` then ``<root>/images/<part>``; with
``path_prefix`` that prefix is stripped instead and the rest is taken under ``<root>``. Every ``.dcm`` file
under ``<root>`` is listed once, so a listed file that is absent and a file no row lists are both reported.

Selection: only full-field 2D images by default (``FinalImageType`` 2D and ``spot_mag`` empty or 0);
``include_cview`` adds the synthetic 2D (C-view) images of tomosynthesis exams, ``include_spot_mag`` the spot
compression / magnification views. Excluded rows are counted in ``cache.json → join → excluded``; they are
not problems (their files are neither required nor reported as unlisted).

Join: a file's exam is ``(empi_anon, acc_anon)``; its breast's findings are the exam's clinical rows whose
``side`` is the image's side, ``B`` (bilateral) or empty (a finding-less row of a negative exam applies to
both breasts, as the publisher's merge notes say). Labels (:mod:`miram.data.collections.schema`):

- ``density``: the exam's ``tissueden`` (1–4 → A–D; 5, a male or unknown breast → unknown), read from all of
  the exam's rows (it is an exam-level value; where rows differ, the densest).
- ``birads``: the most severe ``asses`` of the breast's findings in the order N(1) < B(2) < P(3) < A(0) <
  S(4) < M(5) < K(6), the order of the publisher's screening_label_assignment notebook (A, additional
  evaluation, outranks N/B/P on a screening exam; K outranks everything on a diagnostic one). Digits 0–6 are
  read as the category itself.
- ``cancer``: 1 if a pathology result of the breast has ``path_severity`` 0 (invasive) or 1 (in situ); 0 if
  the breast has pathology results, none 0 or 1 (2 high-risk … 5 negative, 6 non-breast cancer); unknown
  (None) where the breast has no pathology result. A result belongs to the breast ``bside`` names, else to
  its finding's side (B / empty: both).
- ``pathology``: malignant (0/1) / benign (2–5) likewise, only for breasts with a pathology result; 6
  (non-breast cancer) alone leaves it unknown.
- ``path_severity``: the breast's most severe ``path_severity`` (0–6; EMBED only).
- ``laterality`` and ``view`` from ``ImageLateralityFinal`` and ``ViewPosition``.

ROI boxes: ``ROI_coords`` (``((ymin, xmin, ymax, xmax), ...)`` or ``[[...]]``, any nesting; ``()`` = none)
become :attr:`Film.findings` ``{"box": [ymin, xmin, ymax, xmax], "match_level": 1|2|None}`` in DICOM pixels.

Not problems, counted in ``cache.json → join``: files whose exam has no clinical row (kept for pre-training
with unknown labels: ``rows_without_clinical``) and clinical rows whose exam has no file in the metadata
(``clinical_rows_without_image``). Problems (``skipped.csv``; stop the run under ``on_error=fail``): a kept
row whose file is absent or whose path cannot be resolved, a duplicate row, a row with an unreadable value
(named by row and column; a problem row is not cached), a ``.dcm`` under ``<root>`` that no row lists. A
clinical value that cannot be read is a problem naming its row and column, and that value is ignored.
Rows are counted as a spreadsheet shows them (the header is row 1).

Splits: EMBED has no official split, so val and test are drawn by patient (``empi_anon``), stratified by the
patient's cancer status (a cancer / biopsied without cancer / neither); test films never enter pre-training.

Tolerated: column names in any case and with stray spaces; values with stray spaces; ``nan`` / ``None`` as
empty; ids written as numbers (``6555526148046184.0``, ``6.555526148046184e+15``); ``L``/``LEFT``; ``C-View``
for ``cview``; ``spot_mag`` as ``1.0``; ``tissueden`` / ``path_severity`` as ``3.0``; paths with ``\\``.

Licence: EMBED's research use agreement is non-commercial and requires registration, and its clause 5
forbids publicly releasing or commercialising models, weights or embedding spaces trained on it without
Emory's written permission: the notice is printed when EMBED is read and kept in ``cache.json → licence``.
"""

from __future__ import annotations

import ast
import csv
import math
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections.schema import COMMON, birads_index, common_labels, density_index, side_letter
from miram.data.films import Film, FilmSettings, prepare_films
from miram.data.splits import draw_splits

SOURCE = "embed"
METADATA_NAME = "EMBED_OpenData_metadata.csv"
CLINICAL_NAME = "EMBED_OpenData_clinical.csv"

LICENCE_NOTICE = (
    "EMBED licence clause 5: you may not publicly release or commercialize models, model weights or "
    "embedding spaces, including foundation models, trained, pre-trained or fine-tuned on any part of EMBED "
    "without specific prior written permission from the Emory University School of Medicine."
)
LICENCE = {
    "name": "EMBED Open Data licence (non-commercial, registration)",
    "weights_restricted": True,
    "notice": LICENCE_NOTICE,
}

SEVERITIES = (
    "invasive cancer",
    "non-invasive cancer",
    "high-risk",
    "borderline",
    "benign",
    "negative",
    "non-breast cancer",
)
LABELS: dict[str, LabelSpec] = {**COMMON, "path_severity": LabelSpec("multiclass", list(SEVERITIES))}

# asses letter -> BI-RADS category; RANK orders the categories from least to most severe
ASSES = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
RANK = (1, 2, 3, 0, 4, 5, 6)

# name -> accepted header spellings (compared lower-case, spaces removed); the first is the shipped one
META_COLUMNS = {
    "anon_dicom_path": ("anon_dicom_path",),
    "empi_anon": ("empi_anon",),
    "acc_anon": ("acc_anon",),
    "FinalImageType": ("FinalImageType",),
    "ImageLateralityFinal": ("ImageLateralityFinal",),
    "ViewPosition": ("ViewPosition",),
    "spot_mag": ("spot_mag",),
    "ROI_coords": ("ROI_coords", "DCM_ROI_coords"),
}
META_OPTIONAL = {
    "match_level": ("match_level", "ROI_match_level"),
    "num_roi": ("num_roi",),
    "study_date_anon": ("study_date_anon",),
    "cohort_num": ("cohort_num",),
}
CLIN_COLUMNS = {
    "empi_anon": ("empi_anon",),
    "acc_anon": ("acc_anon",),
    "side": ("side",),
    "asses": ("asses",),
    "tissueden": ("tissueden",),
    "path_severity": ("path_severity",),
}
CLIN_OPTIONAL = {"bside": ("bside",), "desc": ("desc",), "study_date_anon": ("study_date_anon",)}

EMPTY = ("", "nan", "none", "null", "na", "n/a")
MAX_ROI_TEXT = 20_000  # longer ROI_coords strings are not parsed (hundreds of boxes: not a real row)


@dataclass
class Finding:
    """One clinical row, reduced to what the labels need."""

    row: int
    side: str  # L | R | B | "" (no side: both breasts)
    path_side: str  # the breast its pathology result belongs to (bside, else side)
    birads: int | None
    density: int | None
    severity: int | None
    desc: str


def _empty(text: str) -> bool:
    return text.strip().lower() in EMPTY


def _norm(text: str) -> str:
    return "" if _empty(text) else text.strip()


def norm_id(text: str) -> str:
    """A patient or exam id as text: ``"6555526148046184.0"`` and ``"6.555526148046184e+15"`` ->
    ``"6555526148046184"``; other text stripped; ``nan`` -> ``""``."""
    text = _norm(text)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        try:
            value = Decimal(text)
        except InvalidOperation:
            return text
        if value == value.to_integral_value():
            return str(int(value))
    return text


def _integer(text: str) -> int | None:
    """``"3"`` / ``"3.0"`` -> 3; empty -> None.

    Raises:
        ValueError: not a whole number.
    """
    text = _norm(text)
    if not text:
        return None
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def image_type(text: str) -> str:
    """``2D`` -> ``2d``; ``cview`` / ``C-View`` -> ``cview``; others lower-cased without punctuation."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    return int(value) if float(value).is_integer() else float(value)


def parse_boxes(text: str) -> list[list[int | float]]:
    """``ROI_coords`` -> ``[[ymin, xmin, ymax, xmax], ...]``.

    Accepts any nesting of lists / tuples (``((1, 2, 3, 4),)``, ``[[1, 2, 3, 4]]``, ``[[[1, 2, 3, 4]]]``);
    ``()``, ``[]`` or empty -> no box.

    Raises:
        ValueError: not a literal, a non-number, a count not a multiple of 4, a negative coordinate or a box
            whose max is below its min.
    """
    text = text.strip()
    if _empty(text) or re.fullmatch(r"[\[\]\(\),\s]*", text):
        return []
    if len(text) > MAX_ROI_TEXT:
        raise ValueError(f"{len(text)} characters")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a list of boxes ({type(e).__name__})") from e
    numbers = [_number(v) for v in _flatten(value)]
    if not numbers or len(numbers) % 4:
        raise ValueError(f"{len(numbers)} numbers, not groups of 4 (ymin, xmin, ymax, xmax)")
    boxes = [numbers[i : i + 4] for i in range(0, len(numbers), 4)]
    for y0, x0, y1, x1 in boxes:
        if min(y0, x0) < 0 or y1 < y0 or x1 < x0:
            raise ValueError(f"box {[y0, x0, y1, x1]} is not (ymin, xmin, ymax, xmax) inside the image")
    return boxes


def _match_levels(text: str, n: int) -> list[int | None]:
    """``match_level`` values, one per box (``[['1', '2']]``, ``[1, 2]``, ``1``); unreadable -> None each."""
    levels: list[int | None] = []
    try:
        if not _empty(text):
            levels = [int(_number(v)) for v in _flatten(ast.literal_eval(text.strip()))]
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        levels = []
    return levels if len(levels) == n else [None] * n


def resolve_path(
    text: str, root: Path, path_prefix: str | None
) -> tuple[list[Path], str | None]:  # fmt: skip
    """Where the file of an ``anon_dicom_path`` may lie under ``root``.

    Returns:
        (candidate paths, most likely first; why none could be formed, or None).
    """
    raw = text.strip().replace("\\", "/")
    if path_prefix is not None:
        prefix = path_prefix.strip().replace("\\", "/").rstrip("/")
        if not raw.startswith(prefix + "/"):
            return [], f"anon_dicom_path {text.strip()!r} does not start with path_prefix {path_prefix!r}"
        return [root / raw[len(prefix) + 1 :].lstrip("/")], None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    cohort = next((i for i, p in enumerate(parts) if p.lower().startswith("cohort_")), None)
    if cohort is not None:
        rel = Path(*parts[cohort:])
        return [root / rel, root / "images" / rel], None
    if parts and not raw.startswith("/") and not re.match(r"[A-Za-z]:/", raw):
        rel = Path(*parts)
        return ([root / rel] if parts[0] == "images" else [root / rel, root / "images" / rel]), None
    return [], (
        f"anon_dicom_path {text.strip()!r} has no cohort_<n> folder to find under the root; pass "
        "--path_prefix with the part to strip"
    )


class Table:
    """A CSV read row by row, keeping only the named columns (the metadata table has ~150 columns and
    ~480,000 rows: never all of it in memory)."""

    def __init__(
        self, path: Path, required: Mapping[str, tuple[str, ...]], optional: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.path = path
        try:
            self._file = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by rows()
            self._reader = csv.reader(self._file)
            header = next(self._reader, [])
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise PrepareError(f"{path}: cannot read the table ({e})") from e
        self.header = [h.strip() for h in header]
        where = {re.sub(r"\s+", "", h).lower(): i for i, h in enumerate(self.header) if h}
        self.index: dict[str, int] = {}
        missing = []
        for name, spellings in {**required, **optional}.items():
            i = next((where[s.lower()] for s in spellings if s.lower() in where), None)
            if i is not None:
                self.index[name] = i
            elif name in required:
                missing.append(name)
        if missing:
            self._file.close()
            raise PrepareError(
                f"{path}: missing column(s) {missing}; the table has {[h for h in self.header if h]}"
            )

    def close(self) -> None:
        self._file.close()

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """``(row number as a spreadsheet shows it, {column: stripped value})`` for each data row."""
        limit = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)  # SRC_DST and ROI columns can exceed the default 128 KiB
        try:
            for n, row in enumerate(self._reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                yield n, {k: (row[i].strip() if i < len(row) else "") for k, i in self.index.items()}
        except (csv.Error, UnicodeDecodeError) as e:
            raise PrepareError(f"{self.path}: unreadable CSV near row {self._reader.line_num} ({e})") from e
        finally:
            csv.field_size_limit(limit)
            self._file.close()


def _find_table(root: Path, given: str | None, name: str, option: str) -> Path:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise PrepareError(f"{path}: {option} table not found")
        return path
    tried = [root / "tables" / name, root / name]
    for path in tried:
        if path.is_file():
            return path
    raise PrepareError(
        f"{root}: no {name} (looked for {', '.join(str(p) for p in tried)}); pass --{option} with its path"
    )


def _finding_values(
    row: dict[str, str],
) -> tuple[str, str | None, int | None, int | None, int | None, list[str]]:
    """``side, bside, birads, density index, path_severity`` of a clinical row and its unreadable columns."""
    bad = []
    side = (side_letter(row["side"]) or _norm(row["side"]).upper()[:1]) if _norm(row["side"]) else ""
    if side not in ("L", "R", "B", ""):
        bad.append("side")
        side = ""
    asses = _norm(row["asses"]).upper()
    birads = ASSES.get(asses, birads_index(asses)) if asses else None
    if asses and birads is None:
        bad.append("asses")
    density = None
    try:
        tissueden = _integer(row["tissueden"])
    except ValueError:
        tissueden = -1
    if tissueden is not None and tissueden not in (1, 2, 3, 4, 5):
        bad.append("tissueden")
    elif tissueden is not None and tissueden != 5:  # 5: a male breast, no ACR composition
        density = density_index(tissueden)
    try:
        severity = _integer(row["path_severity"])
    except ValueError:
        severity = -1
    if severity is not None and not 0 <= severity < len(SEVERITIES):
        bad.append("path_severity")
        severity = None
    return side, side_letter(row.get("bside", "")), birads, density, severity, bad


def read_clinical(
    path: Path, problems: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[Finding]], int]:  # fmt: skip
    """Clinical findings by exam ``(empi_anon, acc_anon)``, and the number of rows read."""
    table = Table(path, CLIN_COLUMNS, CLIN_OPTIONAL)
    exams: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    count = 0
    for n, row in table.rows():
        count += 1
        where = f"{path} row {n}"
        empi, acc = norm_id(row["empi_anon"]), norm_id(row["acc_anon"])
        if not empi or not acc:
            column = "empi_anon" if not empi else "acc_anon"
            problems.append((where, f"empty {column}: the finding cannot be joined to its images"))
            continue

        side, bside, birads, density, severity, bad = _finding_values(row)
        for column in bad:
            problems.append(
                (where, f"column {column}: unreadable value {row[column]!r} (ignored; the exam is kept)")
            )
        exams[(empi, acc)].append(
            Finding(n, side, bside or side, birads, density, severity, _norm(row.get("desc", "")))
        )
    return dict(exams), count


def breast_labels(findings: list[Finding], side: str) -> dict[str, Any]:
    """Labels of one breast (``L`` / ``R``) from its exam's findings (module docstring)."""
    mine = [f for f in findings if f.side in (side, "B", "")]
    ranks = [RANK.index(f.birads) for f in mine if f.birads is not None]
    densities = [f.density for f in findings if f.density is not None]
    severities = [f.severity for f in findings if f.severity is not None and f.path_side in (side, "B", "")]
    malignant = any(s <= 1 for s in severities)
    benign = any(2 <= s <= 5 for s in severities)
    return {
        "density": max(densities) if densities else None,
        "birads": RANK[max(ranks)] if ranks else None,
        "cancer": (1 if malignant else 0) if severities else None,
        "pathology": 1 if malignant else 0 if benign else None,
        "path_severity": min(severities) if severities else None,
    }


def _dicom_files(root: Path) -> set[Path]:
    found: set[Path] = set()
    for folder, _, names in os.walk(root, followlinks=True):  # images/ is often a link to a big disk
        for name in names:
            if name.lower().endswith(".dcm"):
                found.add(Path(folder) / name)
    return found


@dataclass
class _Kept:
    row: int
    path: Path
    rel: str
    empi: str
    acc: str
    side: str
    view: str | None
    boxes: list[dict[str, Any]]
    meta: dict[str, Any]


def prepare_embed(
    root: str,
    out: str,
    max_size: int | None = None,
    flip_to: Literal["none", "left", "right"] = "none",
    spacing_mm: float | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    overwrite: bool = False,
    progress: bool = True,
    metadata: str | None = None,
    clinical: str | None = None,
    include_cview: bool = False,
    include_spot_mag: bool = False,
    path_prefix: str | None = None,
) -> Path:
    """Build a cache of whole films from the EMBED open release (AWS), with BI-RADS, density and pathology.

    EMBED's licence forbids publicly releasing models or weights trained on it without Emory's written
    permission (clause 5); the notice is printed and kept in ``cache.json → licence``.

    Args:
        root: the download folder (``images/cohort_<n>/...`` and ``tables/``).
        out: cache directory (an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this; None = native pixels.
        flip_to: mirror films so the breast lies on this side; ``none`` keeps them.
        spacing_mm: pixel spacing (mm) to assume for files with neither PixelSpacing nor ImagerPixelSpacing.
        val_fraction: share of patients drawn for ``val`` (by ``empi_anon``, stratified by cancer status).
        test_fraction: share of patients drawn for ``test`` (EMBED has no official split).
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv``; ``fail`` stops at the first one.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        metadata: the file table; default ``<root>/tables/EMBED_OpenData_metadata.csv``, else
            ``<root>/EMBED_OpenData_metadata.csv``.
        clinical: the findings table; default ``<root>/tables/EMBED_OpenData_clinical.csv``, else
            ``<root>/EMBED_OpenData_clinical.csv``.
        include_cview: also keep C-view images (synthetic 2D from tomosynthesis; ``FinalImageType`` cview).
        include_spot_mag: also keep spot compression / magnification views (``spot_mag`` 1).
        path_prefix: the part of ``anon_dicom_path`` to strip before taking the rest under ``root``; None =
            take the path from its ``cohort_<n>`` folder onwards (under ``root`` or ``root/images``).

    Returns:
        the cache directory.

    Raises:
        PrepareError: a missing root, table or column, a bad input under ``on_error=fail``, or no usable film.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: EMBED root folder not found")
    print(f"NOTE: {LICENCE_NOTICE}", file=sys.stderr)
    meta_path = _find_table(base, metadata, METADATA_NAME, "metadata")
    clin_path = _find_table(base, clinical, CLINICAL_NAME, "clinical")
    problems: list[tuple[str, str]] = []
    table = Table(meta_path, META_COLUMNS, META_OPTIONAL)
    try:
        exams, clinical_rows = read_clinical(clin_path, problems)
    except BaseException:
        table.close()
        raise

    on_disk = _dicom_files(base)
    listed: set[Path] = set()
    seen: dict[Path, int] = {}
    kept: list[_Kept] = []
    excluded: Counter[str] = Counter()
    rows = rows_without_image = 0
    meta_exams: set[tuple[str, str]] = set()
    allowed = {"2d"} | ({"cview"} if include_cview else set())
    for n, row in table.rows():
        rows += 1
        where = f"{meta_path} row {n}"
        empi, acc = norm_id(row["empi_anon"]), norm_id(row["acc_anon"])
        meta_exams.add((empi, acc))
        candidates, unresolved = resolve_path(row["anon_dicom_path"], base, path_prefix)
        listed.update(candidates)
        kind = image_type(row["FinalImageType"])
        if kind not in allowed:
            excluded[kind if kind in ("cview",) else f"type {row['FinalImageType'] or '(empty)'}"] += 1
            continue
        try:
            spot = _integer(row["spot_mag"])
        except ValueError:
            spot = -1
        if spot not in (None, 0, 1):
            problems.append((where, f"column spot_mag: unreadable value {row['spot_mag']!r}"))
            continue
        if spot == 1 and not include_spot_mag:
            excluded["spot_mag"] += 1
            continue
        where = f"{where} / {Path(row['anon_dicom_path'].replace(chr(92), '/')).name or '(no file name)'}"
        if unresolved is not None:
            problems.append((where, unresolved))
            continue
        file = next((c for c in candidates if c in on_disk), None)
        if file is None:
            rows_without_image += 1
            problems.append(
                (where, f"no image file {candidates[0]}" + "".join(f" (nor {c})" for c in candidates[1:]))
            )
            continue
        if file in seen:
            problems.append(
                (where, f"{file} is listed again (first on row {seen[file]}); this row is ignored")
            )
            continue
        seen[file] = n
        bad = [c for c in ("empi_anon", "acc_anon") if not (empi if c == "empi_anon" else acc)]
        side = side_letter(row["ImageLateralityFinal"])
        if side is None:
            bad.append("ImageLateralityFinal")
        try:
            boxes = parse_boxes(row["ROI_coords"])
        except ValueError as e:
            problems.append((where, f"column ROI_coords: unreadable value {row['ROI_coords'][:200]!r} ({e})"))
            continue
        if bad or side is None:
            problems.append(
                (where, "; ".join(f"column {c}: unreadable value {row.get(c, '')!r}" for c in bad))
            )
            continue
        levels = _match_levels(row.get("match_level", ""), len(boxes))
        rel = file.relative_to(base).as_posix()
        info: dict[str, Any] = {
            "empi_anon": empi,
            "acc_anon": acc,
            "sop_instance_uid": file.stem,
            "image_type": "cview" if kind == "cview" else "2D",
            "spot_mag": spot == 1,
            "anon_dicom_path": row["anon_dicom_path"],
        }
        for column in ("study_date_anon", "cohort_num"):
            if _norm(row.get(column, "")):
                info[column] = row[column]
        kept.append(
            _Kept(
                n,
                file,
                rel,
                empi,
                acc,
                side,
                _norm(row["ViewPosition"]).upper() or None,
                [{"box": b, "match_level": m} for b, m in zip(boxes, levels, strict=True)],
                info,
            )
        )
    unlisted = sorted(on_disk - listed)
    for file in unlisted:
        problems.append((str(file), f"{file}: not in {meta_path}"))

    labelled: list[tuple[_Kept, dict[str, Any]]] = []
    without_clinical = 0
    for item in kept:
        findings = exams.get((item.empi, item.acc))
        if findings is None:
            without_clinical += 1
            labels: dict[str, Any] = dict.fromkeys(
                ("density", "birads", "cancer", "pathology", "path_severity")
            )
        else:
            labels = breast_labels(findings, item.side)
            desc = next((f.desc for f in findings if f.desc), "")
            if desc:
                item.meta["exam_desc"] = desc
        labelled.append((item, {**common_labels(item.side, item.view), **labels}))
    status: dict[str, str] = {}
    for item, labels in labelled:
        rank = {1: "cancer", 0: "biopsied"}.get(labels["cancer"], "")
        if rank == "cancer" or status.get(item.empi, "") == "":
            status[item.empi] = rank or status.get(item.empi, "")
    split_of = draw_splits(status, val_fraction, test_fraction, seed)
    films = [
        Film(
            path=str(item.path),
            key=record_key(item.rel),
            patient_id=item.empi,
            split=split_of[item.empi],
            labels=labels,
            laterality=item.side,
            view=item.view,
            pretrain=split_of[item.empi] != "test",
            meta=item.meta,
            findings=item.boxes,
        )
        for item, labels in labelled
    ]
    clinical_without_image = sum(len(v) for k, v in exams.items() if k not in meta_exams)
    join = {
        "join": "metadata (empi_anon, acc_anon) -> clinical findings of the same exam whose side is the "
        "image's ImageLateralityFinal, B or empty; anon_dicom_path from cohort_<n> on (or less path_prefix) "
        "-> a file under root",
        "rows": rows,
        "images": len(on_disk),
        "rows_without_image": rows_without_image,
        "images_without_row": len(unlisted),
        "excluded": dict(excluded),
        "kept": len(films),
        "rows_without_clinical": without_clinical,
        "clinical_rows": clinical_rows,
        "clinical_rows_without_image": clinical_without_image,
    }
    print(
        f"{SOURCE}: {rows} metadata rows, {len(films)} films kept, excluded {dict(excluded)}; "
        f"{without_clinical} films without clinical rows (kept, labels unknown); {clinical_without_image} of "
        f"{clinical_rows} clinical rows without images; {len(problems)} problem(s)",
        file=sys.stderr,
    )
    settings = FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm)
    check = {
        "root": str(base.resolve()),
        "metadata": str(meta_path.resolve()),
        "clinical": str(clin_path.resolve()),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "include_cview": include_cview,
        "include_spot_mag": include_spot_mag,
        "path_prefix": path_prefix,
    }
    return prepare_films(
        films,
        problems,
        source=SOURCE,
        labels=LABELS,
        settings=settings,
        check=check,
        metadata_files=[str(meta_path), str(clin_path)],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra={"join": join, "licence": dict(LICENCE)},
    )
