"""A collection's CSV tables and its image tree, indexed (shared by the VinDr-Mammo and RSNA readers)."""

from __future__ import annotations

import csv
from pathlib import Path

from miram.data.cache import PrepareError

Row = tuple[int, dict[str, str]]


def read_table(path: Path, required: tuple[str, ...], what: str) -> list[Row]:
    """The rows of a CSV as ``(spreadsheet row number, {lower-case column: stripped value})``.

    Raises:
        PrepareError: the file is missing or unreadable, or lacks a required column (the message lists the
            columns it has).
    """
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise PrepareError(f"{path}: missing column(s) {missing}; it has {columns}")
            rows = []
            for row in reader:
                values = {k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                rows.append((reader.line_num, values))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f"{path}: cannot read {what} ({e})") from e
    return rows


def index_images(
    folder: Path, suffixes: tuple[str, ...], problems: list[tuple[str, str]]
) -> dict[tuple[str, str], Path]:
    """The files one folder level down (``<folder>/<group>/<id><suffix>``) as ``(group, id)`` → file; a file
    at another depth gets ``("", relative path)``, which joins no row. A second file for one key (``.dcm``
    beside ``.dicom``) is reported; the first suffix in ``suffixes`` is kept."""
    found: dict[tuple[str, str], Path] = {}
    files = [p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file()]
    files.sort(key=lambda p: (p.parent.as_posix(), p.stem, suffixes.index(p.suffix.lower()), p.name))
    for path in files:
        rel = path.relative_to(folder)
        key = (rel.parts[0], path.stem) if len(rel.parts) == 2 else ("", rel.as_posix())
        if key in found:
            problems.append((str(path), f"a second file for image {path.stem} ({found[key]} is used)"))
            continue
        found[key] = path
    return found
