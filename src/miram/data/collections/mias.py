"""``miram prepare mini-mias``: mini-MIAS (Mammographic Image Analysis Society) → a cache of whole films.

Layout (``all-mias.tar.gz`` unpacked; the Kaggle copy holds the same files with ``Info.txt`` beside them)::

    <root>/mdb001.pgm … mdb322.pgm     binary PGM, 8-bit, 1024 × 1024: scanned films at 200 µm per pixel
    <root>/Info.txt                    the list of films (``info``: elsewhere; README's own list reads too)
    <root>/README, Licence.txt

Every ``*.pgm`` below ``root`` (any depth, suffix in any case) named ``mdb<3 digits>`` is an image; a second
file of the same name is reported and the shallowest one is used. PGM carries no pixel spacing: the films are
recorded at ``spacing_mm`` (0.2 mm, the mini database's stated pixel edge; ``spacing_from: assumed``).

``Info.txt``: one whitespace-separated line per abnormality, ``mdb001 G CIRC B 535 425 197`` = reference
number, background tissue (F fatty / G fatty-glandular / D dense-glandular), class of abnormality (CALC,
CIRC, SPIC, MISC, ARCH, ASYM, NORM), severity (B / M; absent for NORM), then x, y of the abnormality's centre
and the radius of a circle enclosing it, in pixels, with the ORIGIN AT THE BOTTOM-LEFT corner (README note
3). A film with several abnormalities has several lines; widely spread calcifications have no coordinates
(README note 4; some copies write ``*NOTE 3*`` there instead). Lines that do not start with ``mdb<3 digits>``
(the header, notes, blank lines) are passed over.

Join key: the reference number (``mdb001``) = the image file's stem. Reported as problems (skipped under
``on_error=skip``): a listed film without a file, a file not listed, an unreadable line (named by line number
and field; the film is dropped, its labels would be incomplete), lines of one film that disagree on the
tissue, a centre outside the image. ``cache.json → join`` counts them.

Patient: README note 1: the films come in pairs, left (even number) and right (odd number) breast of one
woman: mdb001/mdb002 are patient ``P001``, mdb003/mdb004 ``P002``. Laterality is taken from the same note
(odd → R, even → L; ``meta → laterality_from``); every MIAS film is a mediolateral oblique view (``MLO``).

Labels: ``tissue`` (multiclass F / G / D), ``abnormality`` (multiclass over the seven classes: a film with
several lines takes the class of its most severe line, M before B before none, the first such line in file
order), ``pathology`` (benign / malignant: malignant if any line is M, benign if any is B, None for a normal
film), ``cancer`` (yes when any line is M; no for NORM or benign only), ``laterality`` and ``view``. Each
line with coordinates becomes a finding ``{"box": [y0, x0, y1, x1], "abnormality", "severity",
"centre_xy", "radius"}``: the circle's bounding box with the y axis flipped to the usual top-left origin
(``y_top = height - y``, the height read from the PGM header, not assumed to be 1024), clipped to the image.

Splits: none official; ``val`` and ``test`` are drawn by patient (pair), stratified by cancer (any M film),
seeded. Test films never enter pre-training.

Tolerated: ``Info.txt`` or ``info.txt`` in any case, at the root or deeper; header and note lines; tabs and
repeated spaces; trailing ``*NOTE 3*`` (or any text) in place of coordinates; reference numbers and codes in
any case; numbers written ``535.0``; text after NORM.

Licence: the MIAS licence agreement (``Licence.txt``): research use only; the database may not be rented,
leased or sold, and publications must cite it (Suckling et al. 1994).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections.schema import COMMON, common_labels
from miram.data.films import Film, FilmSettings, prepare_films, split_films
from miram.data.images import ImageError, image_shape

SOURCE = "mini-mias"
INFO_NAME = "Info.txt"
TISSUES = ("F", "G", "D")
CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
SEVERITIES = ("B", "M")
VIEW = "MLO"
LABELS: dict[str, LabelSpec] = {
    "tissue": LabelSpec("multiclass", ["fatty", "fatty-glandular", "dense-glandular"]),
    "abnormality": LabelSpec("multiclass", list(CLASSES)),
    "pathology": COMMON["pathology"],
    "cancer": COMMON["cancer"],
    "laterality": COMMON["laterality"],
    "view": COMMON["view"],
}
LICENCE = {
    "name": "MIAS MiniMammographic Database licence agreement (Licence.txt): research use only",
    "weights_restricted": False,
    "notice": "mini-MIAS is licensed for research use only (keep its Licence.txt with any copy) and must be "
    "cited: Suckling J et al. (1994), The Mammographic Image Analysis Society Digital Mammogram Database, "
    "Excerpta Medica International Congress Series 1069, 375-378.",
}
_REF = re.compile(r"mdb\d{3}", re.IGNORECASE)


@dataclass
class Line:
    """One abnormality line of ``Info.txt``."""

    number: int
    tissue: str
    abnormality: str
    severity: str | None
    circle: tuple[float, float, float] | None  # x, y (bottom-left origin), radius


@dataclass
class MiasFilm:
    """The lines of one reference number."""

    ref: str
    lines: list[Line] = field(default_factory=list)
    bad: bool = False


def patient_of(ref: str) -> str:
    """``mdb001``/``mdb002`` → ``P001``, ``mdb003``/``mdb004`` → ``P002`` (README note 1: pairs)."""
    return f"P{(int(ref[3:]) + 1) // 2:03d}"


def side_of(ref: str) -> str:
    """``L`` for an even reference number, ``R`` for an odd one (README note 1)."""
    return "L" if int(ref[3:]) % 2 == 0 else "R"


def _number(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def parse_line(tokens: list[str]) -> tuple[str, str, str | None, tuple[float, float, float] | None]:
    """``tissue, class, severity, (x, y, radius) or None`` of one line's fields after the reference number.

    Raises:
        ValueError: naming the field that cannot be read.
    """
    if len(tokens) < 2:
        raise ValueError("expected at least tissue and class after the reference number")
    tissue, abnormality = tokens[0].upper(), tokens[1].upper()
    if tissue not in TISSUES:
        raise ValueError(f"field 2 (tissue) {tokens[0]!r} unreadable (expected F, G or D)")
    if abnormality not in CLASSES:
        raise ValueError(f"field 3 (class) {tokens[1]!r} unreadable (expected {', '.join(CLASSES)})")
    if abnormality == "NORM":
        return tissue, abnormality, None, None
    rest = tokens[2:]
    if not rest or rest[0].upper() not in SEVERITIES:
        got = repr(rest[0]) if rest else "missing"
        raise ValueError(f"field 4 (severity) {got} unreadable (expected B or M)")
    severity = rest[0].upper()
    coords = []
    for token in rest[1:]:
        if token.startswith("*") or not re.match(r"[-+.\d]", token):
            break  # "*NOTE 3*": no coordinates (widely spread calcifications)
        coords.append(token)
    if not coords:
        return tissue, abnormality, severity, None
    unreadable = f"fields 5-7 (x y radius) {' '.join(coords)!r} unreadable (expected three numbers)"
    if len(coords) != 3:
        raise ValueError(unreadable)
    try:
        x, y, r = (_number(c) for c in coords)
    except ValueError:
        raise ValueError(unreadable) from None
    if r <= 0:
        raise ValueError(f"field 7 (radius) {coords[2]!r} is not positive")
    return tissue, abnormality, severity, (x, y, r)


def find_info(base: Path) -> Path:
    """``<root>/Info.txt``, else the first ``info.txt`` (any case) below ``root``, shallowest first."""
    if (base / INFO_NAME).is_file():
        return base / INFO_NAME
    found = sorted(
        (p for p in base.rglob("*") if p.name.lower() == INFO_NAME.lower() and p.is_file()),
        key=lambda p: (len(p.parts), p.as_posix()),
    )
    if not found:
        raise PrepareError(
            f"{base / INFO_NAME}: mini-MIAS film list not found (no info.txt below {base}; pass --info with "
            "the path of Info.txt, or of the README that lists the films)"
        )
    return found[0]


def read_info(path: Path, problems: list[tuple[str, str]]) -> tuple[dict[str, MiasFilm], int]:
    """The films of ``Info.txt`` by reference number (lower case) and the number of data lines; a film with
    an unreadable line, or lines that disagree on the tissue, is marked ``bad`` (its problem is in
    ``problems``)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PrepareError(f"{path}: cannot read the mini-MIAS film list ({e})") from e
    text = raw.decode("utf-8-sig", errors="replace")
    films: dict[str, MiasFilm] = {}
    n_lines = 0
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or not _REF.fullmatch(tokens[0]):
            continue
        n_lines += 1
        ref = tokens[0].lower()
        film = films.setdefault(ref, MiasFilm(ref))
        where = f"{path} line {n} / {ref}"
        try:
            tissue, abnormality, severity, circle = parse_line(tokens[1:])
        except ValueError as e:
            problems.append((where, str(e)))
            film.bad = True
            continue
        if film.lines and tissue != film.lines[0].tissue:
            problems.append(
                (where, f"tissue {tissue} differs from line {film.lines[0].number} ({film.lines[0].tissue})")
            )
            film.bad = True
            continue
        film.lines.append(Line(n, tissue, abnormality, severity, circle))
    if not n_lines:
        raise PrepareError(f"{path}: no film line (expected lines such as 'mdb001 G CIRC B 535 425 197')")
    return films, n_lines


def pgm_files(base: Path, problems: list[tuple[str, str]]) -> tuple[dict[str, Path], list[Path]]:
    """The ``mdb###.pgm`` files below ``base`` by reference number (the shallowest of a repeated name; the
    others reported), and the ``*.pgm`` files with another name."""
    files = sorted(
        (p for p in base.rglob("*") if p.suffix.lower() == ".pgm" and p.is_file()),
        key=lambda p: (len(p.relative_to(base).parts), p.as_posix()),
    )
    found: dict[str, Path] = {}
    others: list[Path] = []
    for path in files:
        if not _REF.fullmatch(path.stem):
            others.append(path)
            continue
        ref = path.stem.lower()
        if ref in found:
            problems.append((str(path), f"a second file for film {ref} ({found[ref]} is used)"))
            continue
        found[ref] = path
    return found, others


_RANK = {"M": 2, "B": 1, None: 0}


def film_labels(film: MiasFilm) -> dict[str, Any]:
    """``tissue``, ``abnormality`` (of the most severe line), ``pathology`` and ``cancer`` of one film."""
    worst = max(film.lines, key=lambda line: _RANK[line.severity])  # max keeps the first of equals
    severities = {line.severity for line in film.lines}
    pathology = 1 if "M" in severities else 0 if "B" in severities else None
    return {
        "tissue": TISSUES.index(film.lines[0].tissue),
        "abnormality": CLASSES.index(worst.abnormality),
        "pathology": pathology,
        "cancer": int(pathology == 1),
    }


def circle_box(circle: tuple[float, float, float], height: int, width: int) -> list[float]:
    """``[y0, x0, y1, x1]`` (top-left origin) of a MIAS circle ``(x, y, r)`` given with a bottom-left origin,
    clipped to the image."""
    x, y, r = circle
    top = height - y
    return [max(0.0, top - r), max(0.0, x - r), min(float(height), top + r), min(float(width), x + r)]


def find_films(
    base: Path, info: Path, listed: dict[str, MiasFilm], problems: list[tuple[str, str]]
) -> tuple[list[Film], dict[str, Any]]:
    """Join the listed films to their files; films get their split later."""
    files, others = pgm_files(base, problems)
    films: list[Film] = []
    rows_without_image = 0
    for ref in sorted(listed):
        entry = listed[ref]
        path = files.get(ref)
        if entry.bad:
            continue
        if path is None:
            rows_without_image += 1
            where = f"{info} line {entry.lines[0].number} / {ref}"
            problems.append((where, f"no image file {base / f'{ref}.pgm'}"))
            continue
        findings = []
        circles = [line for line in entry.lines if line.circle is not None]
        if circles:
            try:
                height, width = image_shape(path)
            except ImageError as e:
                problems.append((str(path), str(e)))
                continue
            outside = [
                line
                for line in circles
                if line.circle is not None
                and not (0 <= line.circle[0] <= width and 0 <= line.circle[1] <= height)
            ]
            if outside:
                line = outside[0]
                problems.append(
                    (
                        f"{info} line {line.number} / {ref}",
                        f"centre {line.circle[:2] if line.circle else ''} outside the {width}x{height} image "
                        f"{path}",
                    )
                )
                continue
            for line in circles:
                assert line.circle is not None
                findings.append(
                    {
                        "box": circle_box(line.circle, height, width),
                        "abnormality": line.abnormality,
                        "severity": line.severity,
                        "centre_xy": [line.circle[0], line.circle[1]],
                        "radius": line.circle[2],
                    }
                )
        side = side_of(ref)
        films.append(
            Film(
                path=str(path),
                key=record_key(ref),
                patient_id=patient_of(ref),
                split="train",
                labels={**film_labels(entry), **common_labels(side, VIEW)},
                laterality=side,
                view=VIEW,
                meta={
                    "mias_ref": ref,
                    "info_lines": [line.number for line in entry.lines],
                    "laterality_from": "reference number (README note 1: even = left, odd = right)",
                    "abnormalities": [
                        {"class": line.abnormality, "severity": line.severity} for line in entry.lines
                    ],
                },
                findings=findings,
            )
        )
    stray = sorted(p for ref, p in files.items() if ref not in listed) + others
    for path in stray:
        problems.append((str(path), f"not in {info}"))
    report = {
        "join": f"{info.name} reference number (mdb###) = image file stem",
        "rows": len(listed),
        "images": len(files) + len(others),
        "rows_without_image": rows_without_image,
        "images_without_row": len(stray),
        "films": len(films),
    }
    return films, report


def assign_splits(films: list[Film], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Draw val/test by patient (film pair), stratified by whether any of the patient's films is M."""
    split_films(films, lambda f: int(f.labels["cancer"] == 1), val_fraction, test_fraction, seed)


def prepare_mias(
    root: str,
    out: str,
    max_size: int | None = None,
    flip_to: Literal["none", "left", "right"] = "none",
    spacing_mm: float | None = 0.2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    overwrite: bool = False,
    progress: bool = True,
    info: str | None = None,
) -> Path:
    """Build a cache of the mini-MIAS films with their tissue, abnormality and severity, circles as boxes.

    Args:
        root: the unpacked ``all-mias`` folder; every ``mdb###.pgm`` below it is read.
        out: cache directory (created; an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this (spacing and boxes follow); None = native.
        flip_to: mirror films so the breast lies on this side (``none`` keeps them as stored).
        spacing_mm: pixel spacing (mm) recorded for the films (PGM has none): 0.2, the mini database's
            200 µm pixel edge; None leaves them without one.
        val_fraction: share of patients (film pairs) drawn for ``val``, stratified by cancer.
        test_fraction: share of patients drawn for ``test`` (mini-MIAS has no official split).
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv``; ``fail`` stops at the first one.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        info: the film list (default ``<root>/Info.txt``, else the first ``info.txt`` below ``root``).

    Returns:
        the cache directory (``cache.json → join`` counts what joined, ``licence`` the terms).

    Raises:
        PrepareError: missing root or film list, a bad input under ``fail``, or nothing usable.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: mini-MIAS folder not found")
    info_path = Path(info) if info else find_info(base)
    if not info_path.is_file():
        raise PrepareError(f"{info_path}: mini-MIAS film list not found")
    problems: list[tuple[str, str]] = []
    listed, n_lines = read_info(info_path, problems)
    films, report = find_films(base, info_path, listed, problems)
    assign_splits(films, val_fraction, test_fraction, seed)
    check = {
        "root": str(base.resolve()),
        "info": str(info_path.resolve()),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    return prepare_films(
        films,
        problems,
        source=SOURCE,
        labels=LABELS,
        settings=FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm),
        check=check,
        metadata_files=[str(info_path)],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra={
            "join": {**report, "info_lines": n_lines},
            "patient": "film pair (README note 1: mdb001/mdb002 are one woman's right/left breast)",
            "abnormalities": dict(
                Counter(line.abnormality for f in listed.values() if not f.bad for line in f.lines)
            ),
            "licence": LICENCE,
        },
    )
