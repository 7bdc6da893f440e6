"""The prepared cache that training reads.

Layout of a cache directory::

    cache.json        format, version, source, label schema, intensity statistics, counts
    manifest.jsonl    one JSON object per record (see CacheRecord), in index order
    skipped.csv       every input that was skipped, with the reason
    records/<key>.npy one uint16 (H, W) array per record, at native resolution
    masks/<key>.npy   whole films only (``kind: films``): the breast mask, a bool thumbnail
    journal/          per-job JSON (records + skips of one source item) and settings.json, for resume

Records are written atomically one by one (temporary file + rename), so an interrupted ``prepare``
resumes by skipping keys already present; ``cache.json`` and ``manifest.jsonl`` are written last, so a
directory without them is never mistaken for a finished cache. Sources that decode in worker processes
write the pixels there (:func:`atomic_save_npy` into :meth:`CacheWriter.record_path`) and a per-job
journal entry (:func:`save_job`) after them; a resumed run reads the journal instead of decoding again.
Every ``prepare`` command stops with :class:`PrepareError` on a bad input it is told not to skip.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

FORMAT = "miram-cache"
VERSION = 1
SPLITS = ("train", "val", "test")
MAX_OPEN_MAPS = 16384
MIN_STD_LEVELS = 0.5  # a cache whose pixel std is under half a grey level (of 65535) is constant: refused


@dataclass
class LabelSpec:
    """One label column of the cache.

    Attributes:
        kind: binary | multiclass (stored as a class index) | multilabel (a list of class indices)
            | value (free integer/string, e.g. BI-RADS, patient metadata).
        classes: class names, index order.
    """

    kind: Literal["binary", "multiclass", "multilabel", "value"]
    classes: list[str] = field(default_factory=list)


@dataclass
class CacheRecord:
    """Metadata of one cached image (the pixels are in ``records/<key>.npy``).

    Attributes:
        key: unique, filesystem-safe identifier.
        split: train | val | test.
        patient_id: grouping key for splits and per-patient aggregation.
        labels: label name -> value (int class index, list of indices for multilabel, None = unknown).
        pretrain: whether the record may enter pre-training pools.
        source: provenance, usually the source file path.
        meta: anything else worth keeping (UIDs, crop box, laterality, view, ...).
    """

    key: str
    split: str
    patient_id: str
    labels: dict[str, Any] = field(default_factory=dict)
    pretrain: bool = True
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class PrepareError(RuntimeError):
    """``prepare`` stopped on a bad input (``on_error=fail``) or found nothing usable."""


class CacheError(RuntimeError):
    """A cache that cannot be written or read, with the path and the problem in the message."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as ``.npy`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CacheWriter:
    """Accumulates records into a cache directory; :meth:`finalize` publishes it.

    Args:
        root: cache directory (created).
        source: name of the data source (``phantoms``, ``cbis-ddsm``, ...), stored in ``cache.json``.
        overwrite: start from scratch instead of resuming when the directory holds records.
    """

    def __init__(self, root: str | Path, source: str, overwrite: bool = False) -> None:
        self.root = Path(root)
        self.source = source
        self.records: list[CacheRecord] = []
        self.skipped: list[tuple[str, str]] = []
        self._keys: set[str] = set()
        if overwrite and self.root.exists():
            for name in ("cache.json", "manifest.jsonl", "skipped.csv"):
                (self.root / name).unlink(missing_ok=True)
            for f in [*(self.root / "records").glob("*.npy"), *(self.root / "masks").glob("*.npy")]:
                f.unlink()
            for f in (self.root / "journal").glob("*.json"):
                f.unlink()
        (self.root / "records").mkdir(parents=True, exist_ok=True)

    def record_path(self, key: str) -> Path:
        """Where the pixels of ``key`` live."""
        return self.root / "records" / f"{key}.npy"

    def has(self, key: str) -> bool:
        """True when the pixels of ``key`` were already written (resume)."""
        return self.record_path(key).exists()

    def add(self, record: CacheRecord, pixels: np.ndarray | None = None) -> None:
        """Add a record; write its pixels unless ``pixels`` is None and they already exist (resume)."""
        if record.key in self._keys:
            raise CacheError(f"{self.root}: duplicate record key '{record.key}'")
        if record.split not in SPLITS:
            raise CacheError(
                f"{self.root}: record '{record.key}' has split '{record.split}', not in {SPLITS}"
            )
        if pixels is not None:
            if pixels.ndim != 2:
                raise CacheError(f"{record.source or record.key}: expected a 2-D image, got {pixels.shape}")
            if pixels.dtype != np.uint16:
                raise CacheError(
                    f"{record.source or record.key}: cache pixels must be uint16, got {pixels.dtype}"
                )
            atomic_save_npy(self.record_path(record.key), pixels)
        elif not self.has(record.key):
            raise CacheError(f"{self.root}: no pixels for record '{record.key}'")
        self._keys.add(record.key)
        self.records.append(record)

    def check_settings(self, settings: dict[str, Any], sources: dict[str, str] | None = None) -> None:
        """Resume only the same job: refuse a directory prepared with other settings or from sources that
        changed since, or holding a cache with no record of its settings; remember these otherwise.

        Args:
            settings: everything that decides the records' pixels and labels (JSON-able).
            sources: input file -> :func:`fingerprint` (size and modification time), when the job reads files.

        Raises:
            CacheError: the message says what differs; ``overwrite`` starts again.
        """
        path, src_path = self.root / "journal" / "settings.json", self.root / "journal" / "sources.json"
        current = json.loads(json.dumps({"source": self.source, **settings}, sort_keys=True, default=str))
        again = "pass overwrite=True (--overwrite true) to rebuild it"
        if not path.exists():
            if (self.root / "cache.json").exists() or any((self.root / "records").glob("*.npy")):
                raise CacheError(
                    f"{self.root}: holds a cache with no record of the settings it was prepared with; {again}"
                )
            if sources is not None:
                atomic_write_bytes(src_path, json.dumps(sources, indent=0, sort_keys=True).encode())
            atomic_write_bytes(path, json.dumps(current, indent=2, sort_keys=True).encode())
            return
        previous = json.loads(path.read_text())
        if previous != current:
            diff = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise CacheError(
                f"{self.root}: holds a partial or finished cache prepared with other settings ({diff}); "
                f"{again}"
            )
        if sources is not None:
            before = json.loads(src_path.read_text()) if src_path.exists() else {}
            changed = sorted(k for k in set(before) | set(sources) if before.get(k) != sources.get(k))
            if changed:
                shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
                raise CacheError(
                    f"{self.root}: {len(changed)} source file(s) changed, appeared or disappeared since this "
                    f"cache was started ({shown}); its pixels would be stale: {again}"
                )

    def load_job(self, job: str) -> tuple[list[CacheRecord], list[tuple[str, str]]] | None:
        """Records and skips of a job finished by an earlier run, or None when it must run (again)."""
        path = journal_path(self.root, job)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            records = [CacheRecord(**r) for r in data["records"]]
            skipped = [(str(a), str(b)) for a, b in data["skipped"]]
        except (ValueError, KeyError, TypeError):
            return None  # unreadable journal entry: redo the job
        if not all(self.has(r.key) for r in records):
            return None
        return records, skipped

    def skip(self, item: str, reason: str) -> None:
        """Remember a skipped input and why; it lands in ``skipped.csv``."""
        self.skipped.append((item, reason))

    def finalize(self, labels: dict[str, LabelSpec], extra: dict[str, Any] | None = None) -> Path:
        """Write ``skipped.csv``, ``manifest.jsonl`` and ``cache.json``; an empty cache is an error."""
        self._write_skipped()
        if not self.records:
            raise CacheError(
                f"{self.root}: no usable records ({len(self.skipped)} inputs skipped; see "
                f"{self.root / 'skipped.csv'})"
            )
        stats = self._stats()
        lines = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in self.records)
        atomic_write_bytes(self.root / "manifest.jsonl", lines.encode())
        counts = {s: sum(r.split == s for r in self.records) for s in SPLITS}
        info = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "num_records": len(self.records),
            "num_skipped": len(self.skipped),
            "splits": counts,
            "labels": {k: asdict(v) for k, v in labels.items()},
            "stats": stats,
            **(extra or {}),
        }
        atomic_write_bytes(self.root / "cache.json", json.dumps(info, indent=2).encode())
        return self.root

    def _stats(self) -> dict[str, Any]:
        """Intensity statistics of the training split (the model must not see val/test pixels, not even
        through their mean), else of the non-test records, else of all (recorded in ``from``).

        Raises:
            CacheError: the chosen records are constant (a zero std cannot normalise anything).
        """
        name, chosen = next(
            (name, chosen)
            for name, chosen in (
                ("train", [r for r in self.records if r.split == "train"]),
                ("train+val (no train split)", [r for r in self.records if r.split != "test"]),
                ("test (the cache holds only test records)", self.records),
            )
            if chosen
        )
        stats: dict[str, Any] = intensity_stats([self.record_path(r.key) for r in chosen])
        if not stats["std"] * 65535.0 >= MIN_STD_LEVELS:
            raise CacheError(
                f"{self.root}: the {len(chosen)} {name} record(s) are constant (pixel std "
                f"{stats['std'] * 65535.0:.3g} grey levels of 65535); a zero-variance cache cannot be "
                "normalised"
            )
        return {**stats, "from": name, "records": len(chosen)}

    def _write_skipped(self) -> None:
        lines = [["input", "reason"], *self.skipped]
        import io

        buf = io.StringIO()
        csv.writer(buf).writerows(lines)
        atomic_write_bytes(self.root / "skipped.csv", buf.getvalue().encode())


def record_key(text: str) -> str:
    """A readable, filesystem-safe record key for ``text`` (a relative path, an image id), with a hash so
    that ``a b.png`` and ``a_b.png`` stay distinct."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', text)[-80:]}_{zlib.crc32(text.encode()):08x}"


def journal_path(root: str | Path, job: str) -> Path:
    """Journal entry of one job (a source item such as one full mammogram)."""
    return Path(root) / "journal" / f"{job}.json"


def save_job(
    root: str | Path, job: str, records: Sequence[CacheRecord], skipped: Sequence[tuple[str, str]]
) -> None:
    """Journal a finished job atomically; call after its pixel files are written."""
    data = {"records": [asdict(r) for r in records], "skipped": [list(s) for s in skipped]}
    atomic_write_bytes(journal_path(root, job), json.dumps(data, sort_keys=True).encode())


def intensity_stats(paths: Sequence[Path], max_samples: int = 256, seed: int = 0) -> dict[str, float]:
    """Mean and std of pixel values scaled to [0, 1], over a seeded sample of records."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(max_samples, len(paths)), replace=False)
    total, total_sq, count = 0.0, 0.0, 0
    for i in chosen:
        a = np.load(paths[i], mmap_mode="r")[::4, ::4].astype(np.float64) / 65535.0
        total += a.sum()
        total_sq += (a * a).sum()
        count += a.size
    mean = total / count
    # E[x²] − E[x]² can round below zero on a constant set: clamp before the root (NaN otherwise)
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    return {"mean": float(mean), "std": float(std)}


def fingerprint(path: str | Path) -> str:
    """``"size:mtime_ns"`` of a source file: what tells a resumed ``prepare`` that an input changed."""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class Cache:
    """Read-only view of a finished cache directory.

    Args:
        root: the cache directory written by a ``CacheWriter``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / "cache.json"
        if not info_path.exists():
            raise CacheError(
                f"{self.root}: not a finished miram cache (no cache.json); run `miram prepare` first"
            )
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        if self.info.get("format") != FORMAT:
            raise CacheError(f"{info_path}: not a miram cache (format {self.info.get('format')!r})")
        if self.info.get("version") != VERSION:
            raise CacheError(
                f"{info_path}: cache version {self.info.get('version')}, this miram reads {VERSION}"
            )
        with open(self.root / "manifest.jsonl") as f:
            self.records = [CacheRecord(**json.loads(line)) for line in f if line.strip()]
        self.labels = {k: LabelSpec(**v) for k, v in self.info["labels"].items()}
        stats = self.info.get("stats", {})
        if not (np.isfinite(stats.get("mean", np.nan)) and stats.get("std", 0.0) * 65535.0 >= MIN_STD_LEVELS):
            raise CacheError(
                f"{info_path}: unusable intensity statistics {stats} (std NaN or zero: a constant image "
                "set); prepare the cache again"
            )
        self._maps: dict[int, np.ndarray] = {}

    @property
    def stats(self) -> dict[str, float]:
        """``{"mean", "std"}`` of pixels scaled to [0, 1]."""
        return dict(self.info["stats"])

    def __len__(self) -> int:
        return len(self.records)

    def path(self, index: int) -> Path:
        """File holding the pixels of record ``index``."""
        return self.root / "records" / f"{self.records[index].key}.npy"

    def image(self, index: int) -> np.ndarray:
        """uint16 ``(H, W)`` pixels of record ``index`` (memory-mapped)."""
        # Opening a memory map costs about as much as resampling a crop, so each process keeps the maps it
        # opened, up to MAX_OPEN_MAPS (well under the kernel's default limit of 65,530 maps per process).
        image = self._maps.get(index)
        if image is None:
            if len(self._maps) >= MAX_OPEN_MAPS:
                self._maps.pop(next(iter(self._maps)))
            image = self._maps[index] = np.load(self.path(index), mmap_mode="r")
        return image

    @property
    def kind(self) -> str:
        """``films`` for whole films with breast masks and pixel spacing, else ``crops``."""
        return str(self.info.get("kind", "crops"))

    def mask(self, index: int) -> tuple[np.ndarray, int]:
        """Breast mask of film ``index``: a bool thumbnail ``(ceil(H/s), ceil(W/s))`` and its stride ``s``.

        Raises:
            CacheError: the cache holds no masks (not prepared from whole films).
        """
        record = self.records[index]
        path = self.root / "masks" / f"{record.key}.npy"
        if "mask_stride" not in record.meta or not path.exists():
            raise CacheError(
                f"{self.root}: record '{record.key}' has no breast mask (the cache is not of whole films; "
                "prepare one with a full-field collection reader)"
            )
        return np.load(path), int(record.meta["mask_stride"])

    def __getstate__(self) -> dict[str, Any]:
        # maps belong to the process that opened them; a worker started by pickling opens its own
        return {**self.__dict__, "_maps": {}}

    def indices(
        self, split: str | Iterable[str] | None = None, pretrain_only: bool = False, label: str | None = None
    ) -> list[int]:
        """Record indices in ``split`` (one or several), optionally only pre-training-eligible records and
        only records whose ``label`` is known."""
        splits = {split} if isinstance(split, str) else (set(split) if split is not None else None)
        if label is not None and label not in self.labels:
            raise CacheError(f"{self.root}: no label '{label}'; available: {sorted(self.labels)}")
        out = []
        for i, r in enumerate(self.records):
            if splits is not None and r.split not in splits:
                continue
            if pretrain_only and not r.pretrain:
                continue
            if label is not None and r.labels.get(label) is None:
                continue
            out.append(i)
        return out
