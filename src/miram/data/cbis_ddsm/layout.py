"""Find the files of a CBIS-DDSM CSV path in a download, whatever the retriever's layout.

A CSV path is ``<Subject>/<StudyInstanceUID>/<SeriesInstanceUID>/<file>`` (``docs/cbis-ddsm.md`` §2).
Supported, in the order tried:

- ``metadata.csv`` written by the NBIA retriever (``Series UID`` → ``File Location``) anywhere near the root;
- Kaggle JPEG redistribution: ``jpeg/<SeriesInstanceUID>/*.jpg`` (and ``csv/dicom_info.csv`` when present);
- C: ``<Subject>/<StudyUID>/<SeriesUID>/`` literally;
- A, B, D: ``<Subject>/<…-NNNNN>/<…-NNNNN>/`` where NNNNN are the last five digits of the study / series
  UID, compared as integers (leading zeros may be dropped in folder names). D is B under eight top folders.

The file name in the CSV (``000000.dcm``) is never used: every image file in the series folder is
returned, and ``prepare`` tells full image, crop and mask apart by shape.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SUBJECT_RE = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")
IMAGE_SUFFIXES = (".dcm", ".dicom", ".jpg", ".jpeg", ".png")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


class ResolveError(LookupError):
    """A CSV path that points nowhere in the download; the message says which level failed."""


@dataclass
class TreeIndex:
    """What :func:`index_tree` found under a download root.

    Attributes:
        root: the download root.
        subjects: subject folder name → folders with that name (several when layouts are mixed).
        series: SeriesInstanceUID → image files (from ``metadata.csv`` or the Kaggle ``jpeg/`` tree).
        kind: ``dicom`` or ``jpeg`` (Kaggle).
    """

    root: Path
    subjects: dict[str, list[Path]] = field(default_factory=dict)
    series: dict[str, list[Path]] = field(default_factory=dict)
    kind: str = "dicom"

    def __len__(self) -> int:
        return len(self.subjects) + len(self.series)


def _image_files(folder: Path) -> list[Path]:
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
    except OSError:
        return []


def _read_metadata(path: Path, index: TreeIndex) -> None:
    """NBIA ``metadata.csv``: ``Series UID`` → ``File Location`` (relative to the CSV's folder)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            uid, loc = row.get("series uid", ""), row.get("file location", "")
            if not uid or not loc:
                continue
            folder = (path.parent / loc.replace("\\", "/")).resolve()
            files = _image_files(folder)
            if files:
                index.series[uid] = files


def _read_kaggle(root: Path, index: TreeIndex) -> None:
    """Kaggle: ``jpeg/<SeriesUID>/*.jpg``; ``csv/dicom_info.csv`` ``image_path`` rebased onto ``jpeg/``."""
    jpeg = root / "jpeg"
    for d in sorted(jpeg.iterdir()):
        if d.is_dir():
            files = _image_files(d)
            if files:
                index.series[d.name] = files
    info = root / "csv" / "dicom_info.csv"
    if info.is_file():
        with open(info, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                uid, rel = (row.get("SeriesInstanceUID") or "").strip(), (row.get("image_path") or "").strip()
                if not uid or "jpeg/" not in rel:
                    continue
                p = jpeg / rel.split("jpeg/", 1)[1]
                if p.is_file() and p not in index.series.setdefault(uid, []):
                    index.series[uid].append(p)
    index.kind = "jpeg"


def index_tree(root: str | Path, max_depth: int = 6) -> TreeIndex:
    """Walk a download once, recording subject folders (without entering them) and metadata files.

    Args:
        root: the download root (any level above the subject folders).
        max_depth: how deep to look for subject folders (layout D nests them three levels down).

    Raises:
        ResolveError: the root does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResolveError(f"{root}: download root not found")
    index = TreeIndex(root=root)
    if (root / "jpeg").is_dir():
        _read_kaggle(root, index)
        return index
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "metadata.csv" in filenames:
            _read_metadata(here / "metadata.csv", index)
        keep = []
        for name in sorted(dirnames):
            if SUBJECT_RE.match(name):
                index.subjects.setdefault(name, []).append(here / name)
            elif not name.startswith("."):
                keep.append(name)
        # subject folders are leaves for the walk; their contents are listed only when a row needs them
        dirnames[:] = keep if len(here.parts) - base_depth < max_depth else []
    return index


def _matches(name: str, uid: str) -> bool:
    """Folder ``name`` stands for ``uid``: the UID itself (layout C) or its last five digits as an integer."""
    if name == uid:
        return True
    m, tail = _TRAILING_DIGITS.search(name), uid[-5:]
    return bool(m and tail.isdigit() and len(m.group(1)) <= 5 and int(m.group(1)) == int(tail))


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def resolve(index: TreeIndex, csv_path: str) -> list[Path]:
    """The image files of the series a CSV path names.

    Args:
        index: from :func:`index_tree`.
        csv_path: ``Subject/StudyUID/SeriesUID/file`` as in the CSV (stripped).

    Returns:
        every image file of that series (sorted; crop and mask are told apart later, by shape).

    Raises:
        ResolveError: the subject, study or series folder is missing, or the series folder is empty.
    """
    parts = [p for p in csv_path.replace("\\", "/").split("/") if p]
    if len(parts) < 3:
        raise ResolveError(f"CSV path {csv_path!r} is not Subject/StudyUID/SeriesUID/file")
    subject, study, series = parts[0], parts[1], parts[2]
    if series in index.series:
        return list(index.series[series])
    if index.kind == "jpeg":
        raise ResolveError(f"{index.root / 'jpeg' / series}: series folder not found for {csv_path!r}")
    folders = index.subjects.get(subject)
    if not folders:
        raise ResolveError(f"{index.root}: subject folder {subject} not found for {csv_path!r}")
    reasons = []
    for folder in folders:
        studies = [d for d in _children(folder) if _matches(d.name, study)]
        if not studies:
            reasons.append(f"{folder}: no study folder for UID …{study[-5:]}")
            continue
        for sdir in studies:
            for ser in (d for d in _children(sdir) if _matches(d.name, series)):
                files = _image_files(ser)
                if files:
                    return files
                reasons.append(f"{ser}: series folder holds no image files")
            if not any(_matches(d.name, series) for d in _children(sdir)):
                reasons.append(f"{sdir}: no series folder for UID …{series[-5:]}")
    raise ResolveError("; ".join(reasons) + f" (CSV path {csv_path!r})")
