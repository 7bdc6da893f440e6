"""``miram prepare vindr-mammo``: VinDr-Mammo v1.0.0 (PhysioNet) → a cache of whole films.

Layout, as PhysioNet ships it::

    <root>/images/<study_id>/<image_id>.dicom
    <root>/breast-level_annotations.csv   one row per image
    <root>/finding_annotations.csv        one row per finding box; a ``No Finding`` row for an image without
    <root>/metadata.csv                   DICOM tags (not read)

Columns read: ``breast-level_annotations.csv``: study_id, series_id, image_id, laterality, view_position,
breast_birads, breast_density, split (height, width kept in meta when present). ``finding_annotations.csv``:
image_id, finding_categories, finding_birads, xmin, ymin, xmax, ymax (study_id checked when present).

Join key: a breast-level row joins the file ``images/<study_id>/<image_id>.dicom``; a finding row joins the
breast-level row of its image_id. Reported, not fatal (listed in ``skipped.csv`` under ``on_error=skip``): a
breast-level row whose file is missing, a file under ``images/`` with no breast-level row (or not at
``<study_id>/<image_id>``), a finding row whose image has no breast-level row, a second row for one image,
and a row with an unreadable value (the problem names the row and column; an unreadable finding row drops its
image, whose findings would otherwise be wrong). Rows are numbered as a spreadsheet shows them (the header is
row 1).

Patient: VinDr publishes no patient identifier; a study (one screening exam, four views) is the grouping unit,
so ``patient_id`` = study_id. Should one woman have two exams, the data do not say so, and they could land in
different splits.

Labels (:mod:`miram.data.collections.schema` plus two of VinDr's own):

- ``density`` ← breast_density (``DENSITY A``–``D`` → 0–3); ``birads`` ← breast_birads (``BI-RADS 1``–``5``
  → index = category); ``laterality`` ← laterality; ``view`` ← view_position. Empty → None (unknown).
- ``findings`` (multilabel over :data:`FINDINGS`, VinDr's category list) ← the union of finding_categories
  over the image's finding rows; ``No Finding`` → ``[]``; an image without any finding row → None.
- ``suspicious`` (binary) ← breast BI-RADS ≥ 4 (4 or 5; VinDr has no 6); None when BI-RADS is empty or 0.

Each finding row with coordinates becomes a box in ``meta.findings``: ``{"box": [ymin, xmin, ymax, xmax]
(native pixels, moved with the cached pixels), "categories": [...], "birads": finding BI-RADS or None}``.

Splits: the official split is kept: ``test`` → test (never in pre-training pools); ``val`` is drawn from the
``training`` studies, by study, stratified by the study's highest breast BI-RADS, seeded. A study whose rows
disagree on the split goes to test whole (listed in ``cache.json → studies_in_both_splits``).

Tolerated: column names in any case and with stray spaces, a UTF-8 byte-order mark, values with stray
spaces, ``L``/``LEFT``, ``4``/``4.0``/``BI-RADS 4``, ``C``/``DENSITY C``, split ``train`` for ``training``,
files named ``.dcm`` instead of ``.dicom``; finding_categories as a Python list string (``['Mass', 'Suspicious
Calcification']``), ``[]``, blank, or a plain unbracketed string (``Mass``, comma-separated names), category
names in any case and with ``_`` for spaces.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections.schema import COMMON, birads_index, common_labels, density_index, side_letter
from miram.data.collections.tables import Row, index_images, read_table
from miram.data.films import Film, FilmSettings, prepare_films
from miram.data.splits import draw_splits

SOURCE = "vindr-mammo"
BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
IMAGE_SUFFIXES = (".dicom", ".dcm")  # preference order when both exist
NO_FINDING = "No Finding"
FINDINGS = (
    "Mass",
    "Suspicious Calcification",
    "Asymmetry",
    "Focal Asymmetry",
    "Global Asymmetry",
    "Architectural Distortion",
    "Skin Thickening",
    "Skin Retraction",
    "Nipple Retraction",
    "Suspicious Lymph Node",
)
LABELS: dict[str, LabelSpec] = {
    **{name: COMMON[name] for name in ("density", "birads", "laterality", "view")},
    "findings": LabelSpec("multilabel", list(FINDINGS)),
    "suspicious": LabelSpec("binary", ["no", "yes"]),
}
LICENCE = {
    "name": "PhysioNet Credentialed Health Data License 1.5.0",
    "weights_restricted": False,
    "notice": "VinDr-Mammo is credentialed-access PhysioNet data: its credentialing and data use agreement "
    "apply to the data.",
}
SPLIT_NAMES = {"training": "train", "train": "train", "test": "test"}
BREAST_COLUMNS = (
    "study_id",
    "image_id",
    "laterality",
    "view_position",
    "breast_birads",
    "breast_density",
    "split",
)
FINDING_COLUMNS = ("image_id", "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax")
_CATEGORY_OF = {name.lower(): name for name in (*FINDINGS, NO_FINDING)}


def parse_categories(text: str) -> list[str]:
    """VinDr's finding names in one finding_categories cell, ``No Finding`` dropped, in order, no repeats.

    Raises:
        ValueError: not a list of strings, or a name outside :data:`FINDINGS` and ``No Finding``.
    """
    text = text.strip()
    if not text:
        return []
    if text[0] in "[('\"":
        try:
            value = ast.literal_eval(text)  # VinDr writes Python's repr of a list, not JSON
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise ValueError(f"not a list of names ({type(e).__name__})") from None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ValueError("not a list of names")
    else:
        items = text.split(",")
    names: list[str] = []
    for item in items:
        name = _CATEGORY_OF.get(re.sub(r"[\s_]+", " ", item).strip().lower())
        if name is None:
            known = ", ".join((*FINDINGS, NO_FINDING))
            raise ValueError(f"unknown finding category {item.strip()!r} (known: {known})")
        if name != NO_FINDING and name not in names:
            names.append(name)
    return names


def _number(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


@dataclass
class _Image:
    """One breast-level row, joined."""

    where: str
    study_id: str
    image_id: str
    series_id: str
    laterality: str
    view: str
    birads: int | None
    density: int | None
    split: str
    size: list[int] | None
    categories: list[str] | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)


def _breast_rows(
    rows: list[Row], csv_path: Path, problems: list[tuple[str, str]]
) -> tuple[dict[str, _Image], set[tuple[str, str]], dict[str, set[str]], dict[str, int]]:
    """Images by image_id (rows with a bad value or a repeated image_id go to ``problems``); every
    ``(study_id, image_id)`` listed, readable or not; the official split names each study's rows carry; each
    study's highest breast BI-RADS (the split stratum)."""
    images: dict[str, _Image] = {}
    listed: set[tuple[str, str]] = set()
    study_splits: dict[str, set[str]] = defaultdict(set)
    worst: dict[str, int] = {}
    for n, row in rows:
        image_id, study_id = row["image_id"], row["study_id"]
        where = f"{csv_path} row {n} / {image_id or '?'}"
        listed.add((study_id, image_id))
        split = SPLIT_NAMES.get(row["split"].lower())
        if study_id and split is not None:
            study_splits[study_id].add(split)
        birads = birads_index(row["breast_birads"])
        if study_id and birads is not None:
            worst[study_id] = max(worst.get(study_id, -1), birads)
        bad = []
        if not image_id or not study_id:
            bad.append("empty study_id or image_id")
        if split is None:
            bad.append(f"split {row['split']!r} unreadable (expected training or test)")
        laterality = side_letter(row["laterality"])
        if laterality is None:
            bad.append(f"laterality {row['laterality']!r} unreadable (expected L or R)")
        if not row["view_position"]:
            bad.append("view_position empty")
        if row["breast_birads"] and birads is None:
            bad.append(f"breast_birads {row['breast_birads']!r} unreadable (expected BI-RADS 0-6)")
        density = density_index(row["breast_density"])
        if row["breast_density"] and density is None:
            bad.append(f"breast_density {row['breast_density']!r} unreadable (expected DENSITY A-D)")
        if image_id in images:
            bad.append(f"image_id repeated (first at {images[image_id].where})")
        if bad:
            problems.append((where, "; ".join(bad)))
            continue
        try:
            size: list[int] | None = [int(_number(row["height"])), int(_number(row["width"]))]
        except (KeyError, ValueError):
            size = None  # only kept for reference: the decoded file says its size
        images[image_id] = _Image(
            where=where,
            study_id=study_id,
            image_id=image_id,
            series_id=row.get("series_id", ""),
            laterality=laterality or "",
            view=row["view_position"].upper(),
            birads=birads,
            density=density,
            split=split or "",
            size=size,
        )
    return images, listed, study_splits, worst


def _finding_rows(
    rows: list[Row],
    csv_path: Path,
    images: dict[str, _Image],
    listed: set[str],
    problems: list[tuple[str, str]],
) -> tuple[set[str], int]:
    """Attach categories and boxes to ``images``; returns the image_ids with an unreadable finding row (their
    problems are in ``problems``) and the number of finding rows whose image has no breast-level row (rows of
    an image whose breast-level row is unreadable are passed over: that row is reported already)."""
    bad_images: set[str] = set()
    orphans = 0
    for n, row in rows:
        image_id = row["image_id"]
        where = f"{csv_path} row {n} / {image_id or '?'}"
        image = images.get(image_id)
        if image is None:
            if image_id not in listed:
                orphans += 1
                problems.append((where, f"image_id not in {BREAST_CSV}"))
            continue
        bad = []
        if row.get("study_id") and row["study_id"] != image.study_id:
            bad.append(f"study_id {row['study_id']!r} differs from {BREAST_CSV} ({image.study_id!r})")
        try:
            categories = parse_categories(row["finding_categories"])
        except ValueError as e:
            bad.append(f"finding_categories {row['finding_categories']!r} unreadable ({e})")
            categories = []
        birads = birads_index(row["finding_birads"])
        if row["finding_birads"] and birads is None:
            bad.append(f"finding_birads {row['finding_birads']!r} unreadable (expected BI-RADS 0-6)")
        coords = [row[c] for c in ("xmin", "ymin", "xmax", "ymax")]
        box = None
        if any(coords):
            try:
                x0, y0, x1, y1 = (_number(c) for c in coords)
            except ValueError:
                blank = [c for c, v in zip(("xmin", "ymin", "xmax", "ymax"), coords, strict=True) if not v]
                empty = f" ({blank} empty)" if blank else ""
                bad.append(f"box xmin,ymin,xmax,ymax {coords} unreadable{empty}")
            else:
                if x1 < x0 or y1 < y0:
                    bad.append(f"box xmin,ymin,xmax,ymax {coords}: max below min")
                elif not categories and not bad:
                    bad.append("a box but no finding category")
                box = [y0, x0, y1, x1]
        if bad:
            problems.append((where, "; ".join(bad)))
            bad_images.add(image_id)
            continue
        if image.categories is None:
            image.categories = []
        image.categories += [c for c in categories if c not in image.categories]
        if box is not None:
            image.boxes.append({"box": box, "categories": categories, "birads": birads})
    return bad_images, orphans


def prepare_vindr(
    root: str,
    out: str,
    max_size: int | None = None,
    flip_to: Literal["none", "left", "right"] = "none",
    spacing_mm: float | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    overwrite: bool = False,
    progress: bool = True,
    breast_csv: str | None = None,
    finding_csv: str | None = None,
) -> Path:
    """Build a cache of VinDr-Mammo whole films with their breast-level labels and finding boxes.

    Args:
        root: the PhysioNet download (``vindr-mammo/1.0.0``): holds ``images/`` and the annotation CSVs.
        out: cache directory (created; an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this (spacing and boxes follow); None = native.
        flip_to: mirror films so the breast lies on this side (``none`` keeps them as stored).
        spacing_mm: pixel spacing (mm) to assume for files with neither PixelSpacing nor ImagerPixelSpacing.
        val_fraction: share of the official ``training`` studies drawn for ``val``, by study, per BI-RADS.
        seed: seed of the validation draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv`` and goes on; ``fail`` stops at the first.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        breast_csv: the breast-level annotations (default ``<root>/breast-level_annotations.csv``).
        finding_csv: the finding annotations (default ``<root>/finding_annotations.csv``).

    Returns:
        the cache directory (``cache.json → join`` counts what joined, ``licence`` the terms).

    Raises:
        PrepareError: missing root, image folder, CSV or column; a bad input under ``on_error=fail``; or no
            usable film.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: VinDr-Mammo root not found")
    folder = base / "images"
    if not folder.is_dir():
        raise PrepareError(f"{folder}: image folder not found (expected images/<study_id>/<image_id>.dicom)")
    breast_path = Path(breast_csv) if breast_csv else base / BREAST_CSV
    finding_path = Path(finding_csv) if finding_csv else base / FINDING_CSV
    breast = read_table(breast_path, BREAST_COLUMNS, "breast-level annotations")
    finding = read_table(finding_path, FINDING_COLUMNS, "finding annotations")
    problems: list[tuple[str, str]] = []
    images, listed, study_splits, worst = _breast_rows(breast, breast_path, problems)
    bad_images, orphans = _finding_rows(finding, finding_path, images, {i for _, i in listed}, problems)
    files = index_images(folder, IMAGE_SUFFIXES, problems)

    both = sorted(s for s, names in study_splits.items() if len(names) > 1)
    train_studies = {s: str(worst.get(s, "")) for s, names in study_splits.items() if names == {"train"}}
    split_of = {
        **{s: "test" for s, names in study_splits.items() if "test" in names},
        **draw_splits(train_studies, val_fraction, 0.0, seed),
    }
    films: list[Film] = []
    rows_without_image = 0
    no_finding_row = 0
    for image in images.values():
        path = files.get((image.study_id, image.image_id))
        if image.image_id in bad_images:
            continue
        if path is None:
            rows_without_image += 1
            expected = folder / image.study_id / f"{image.image_id}.dicom"
            problems.append((image.where, f"no image file {expected}"))
            continue
        no_finding_row += image.categories is None
        split = split_of[image.study_id]
        labels = {
            "density": image.density,
            "birads": image.birads,
            **common_labels(image.laterality, image.view),
            "findings": None
            if image.categories is None
            else sorted(FINDINGS.index(c) for c in image.categories),
            "suspicious": None if not image.birads else int(image.birads >= 4),
        }
        films.append(
            Film(
                path=str(path),
                key=record_key(f"{image.study_id}/{image.image_id}"),
                patient_id=image.study_id,
                split=split,
                labels=labels,
                laterality=image.laterality,
                view=image.view,
                pretrain=split != "test",
                meta={
                    "study_id": image.study_id,
                    "series_id": image.series_id,
                    "image_id": image.image_id,
                    "official_split": "test" if split == "test" else "training",
                    "csv_shape": image.size,
                },
                findings=image.boxes,
            )
        )
    stray = sorted((p, key) for key, p in files.items() if key not in listed)
    for path, (study, _) in stray:
        where = "" if study else " (not at images/<study_id>/<image_id>.dicom)"
        problems.append((str(path), f"not in {breast_path}{where}"))
    join = {
        "join": f"{BREAST_CSV} (study_id, image_id) -> images/<study_id>/<image_id>.dicom; {FINDING_CSV} "
        "image_id -> its breast-level row",
        "rows": len(breast),
        "images": len(files),
        "rows_without_image": rows_without_image,
        "images_without_row": len(stray),
        "finding_rows": len(finding),
        "finding_rows_without_image_row": orphans,
        "images_without_finding_row": no_finding_row,
    }
    extra: dict[str, Any] = {
        "join": join,
        "patient": "study_id (VinDr has no patient id: one study = one exam of one woman)",
        "studies_in_both_splits": both,
        "licence": LICENCE,
    }
    check = {
        "root": str(base.resolve()),
        "breast_csv": str(breast_path.resolve()),
        "finding_csv": str(finding_path.resolve()),
        "val_fraction": val_fraction,
        "seed": seed,
    }
    settings = FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm)
    return prepare_films(
        sorted(films, key=lambda f: f.key),
        problems,
        source=SOURCE,
        labels=LABELS,
        settings=settings,
        check=check,
        metadata_files=[str(breast_path), str(finding_path)],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra=extra,
    )
