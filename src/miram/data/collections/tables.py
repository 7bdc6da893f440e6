"""A collection's CSV tables, spreadsheets and image tree, indexed (shared by the collection readers)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

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


def sheet_cell(value: Any) -> str:
    """A spreadsheet cell as text: None → ``""``, ``2.0`` → ``"2"``, stray spaces removed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_sheet(
    path: Path, what: str, option: str, sheet: str | None = None
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-empty rows (with their 1-based row numbers) of an XLSX, or of a CSV export of
    it (``,``, ``;`` or tab separated), cells as text (:func:`sheet_cell`).

    Args:
        path: the ``.xlsx`` (any other suffix than ``.csv`` is read as XLSX) or ``.csv`` file.
        what: what the file is, for messages (``CMMD clinical sheet``).
        option: the command option that names the file, for messages (``clinical``).
        sheet: the worksheet to read when the workbook has one of this name (compared without case or
            stray spaces); otherwise, or for None, the first.

    Raises:
        PrepareError: the file is missing, unreadable or empty, or openpyxl is not installed for an XLSX.
    """
    if not path.is_file():
        raise PrepareError(
            f"{path}: {what} not found (pass --{option} with its path, or with the path of a CSV export "
            "of it)"
        )
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            text = path.read_text(encoding="latin-1")
        except OSError as e:
            raise PrepareError(f"{path}: cannot read the {what} ({e})") from e
        first = next((line for line in text.splitlines() if line.strip()), "")
        delimiter = max(",;\t", key=first.count)
        table = [[sheet_cell(v) for v in row] for row in csv.reader(text.splitlines(), delimiter=delimiter)]
    else:
        try:
            import openpyxl
        except ImportError as e:
            raise PrepareError(
                f"{path}: reading the {what} (XLSX) needs openpyxl: pip install 'miram[collections]' "
                f"(or export the sheet as CSV and pass it with --{option})"
            ) from e
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # noqa: BLE001 - openpyxl raises zipfile, KeyError, ValueError... on a bad file
            raise PrepareError(f"{path}: not a readable XLSX workbook ({type(e).__name__}: {e})") from e
        try:
            named = [s for s in book.worksheets if sheet and s.title.strip().lower() == sheet.lower()]
            chosen = (named or book.worksheets)[0]
            table = [[sheet_cell(v) for v in row] for row in chosen.iter_rows(values_only=True)]
        finally:
            book.close()
    numbered = [(n, row) for n, row in enumerate(table, start=1) if any(row)]
    if not numbered:
        raise PrepareError(f"{path}: the {what} is empty")
    (_, header), rows = numbered[0], numbered[1:]
    return header, rows
