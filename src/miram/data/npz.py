"""``miram prepare npz``: a MedMNIST-style ``.npz`` → a cache.

The archive holds ``{train,val,test}_images`` (``(n, H, W)`` or ``(n, H, W, C)``, uint8 or uint16) and
``{train,val,test}_labels`` (``(n,)``, ``(n, 1)`` class indices, or ``(n, k)`` multi-hot). 8-bit images are
scaled by 257 into uint16; colour images become luminance. MedMNIST has no patient ids, so each image is
its own "patient" and the archive's splits are kept as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from miram.data.cache import CacheRecord, CacheWriter, LabelSpec, PrepareError, fingerprint
from miram.data.images import ImageError, to_uint16_array

SPLITS = ("train", "val", "test")


def _labels(raw: np.ndarray, path: Path, split: str, n: int) -> tuple[np.ndarray, bool]:
    """Labels as ``(n,)`` class indices, or ``(n, k)`` multi-hot (second value True)."""
    if raw.shape[0] != n:
        raise PrepareError(f"{path}: {split}_labels has {raw.shape[0]} rows for {n} images")
    if raw.ndim == 1 or (raw.ndim == 2 and raw.shape[1] == 1):
        return raw.reshape(n).astype(np.int64), False
    if raw.ndim == 2:
        return raw.astype(np.int64), True
    raise PrepareError(f"{path}: {split}_labels has shape {raw.shape}; expected (n,), (n, 1) or (n, k)")


def prepare_npz(
    path: str,
    out: str,
    classes: list[str] | None = None,
    min_size: int = 16,
    overwrite: bool = False,
) -> Path:
    """Build a cache from a MedMNIST-style archive.

    Args:
        path: the ``.npz`` file.
        out: cache directory.
        classes: class names in index order (default ``"0"``, ``"1"``, ...).
        min_size: smallest usable side; smaller images are skipped with the reason.
        overwrite: discard an existing cache in ``out``.

    Returns:
        the cache directory.

    Raises:
        PrepareError: missing file or arrays, mismatched shapes, or nothing usable.
    """
    src = Path(path)
    if not src.is_file():
        raise PrepareError(f"{src}: file not found")
    try:
        data = np.load(src, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PrepareError(f"{src}: not a readable .npz archive ({e})") from e
    present = [s for s in SPLITS if f"{s}_images" in data.files]
    if not present:
        raise PrepareError(f"{src}: no {{train,val,test}}_images arrays (found {data.files})")
    missing = [f"{s}_labels" for s in present if f"{s}_labels" not in data.files]
    if missing:
        raise PrepareError(f"{src}: missing array(s) {missing}")
    writer = CacheWriter(out, "npz", overwrite=overwrite)
    writer.check_settings(
        {"path": str(src.resolve()), "classes": classes, "min_size": min_size},
        sources={str(src.resolve()): fingerprint(src)},
    )
    num_classes, multilabel = 0, False
    for split in present:
        images = data[f"{split}_images"]
        labels, multilabel = _labels(data[f"{split}_labels"], src, split, len(images))
        num_classes = max(num_classes, labels.shape[1] if multilabel else int(labels.max(initial=-1)) + 1)
        for i in range(len(images)):
            key = f"{split}_{i:06d}"
            where = f"{src}:{split}_images[{i}]"
            try:
                image = to_uint16_array(np.asarray(images[i]), where)
            except ImageError as e:
                writer.skip(where, str(e))
                continue
            if min(image.shape) < min_size:
                writer.skip(
                    where, f"image {image.shape[0]}x{image.shape[1]} smaller than min_size {min_size}"
                )
                continue
            if not image.any():
                writer.skip(where, "all-zero image")
                continue
            value = np.flatnonzero(labels[i]).tolist() if multilabel else int(labels[i])
            record = CacheRecord(
                key, split, patient_id=key, labels={"label": value}, pretrain=split != "test", source=where
            )
            writer.add(record, image)  # always written: pixels are never taken from an earlier run
    names = classes or [str(c) for c in range(num_classes)]
    if len(names) < num_classes:
        raise PrepareError(f"{src}: {num_classes} classes in the labels but {len(names)} names given")
    spec = LabelSpec("multilabel", names) if multilabel else LabelSpec("multiclass", names)
    return writer.finalize({"label": spec}, extra={"npz": str(src)})
