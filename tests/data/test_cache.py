"""The cache never lies: no stale pixels from another job, statistics from training data only, no NaN."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miram.data.cache import Cache, CacheError, CacheRecord, CacheWriter, LabelSpec
from miram.data.folder import prepare_folder
from miram.data.npz import prepare_npz
from miram.data.phantom import prepare_phantoms


def npz(path: Path, value: int) -> Path:
    images = np.full((3, 28, 28), value, np.uint8)
    images[:, :14] //= 2  # not constant
    np.savez(path, train_images=images, train_labels=np.array([0, 1, 0]))
    return path


def test_prepare_npz_into_another_files_cache_is_refused_not_stale(tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_npz(str(npz(tmp_path / "A.npz", 10)), str(out))
    with pytest.raises(CacheError, match=r"other settings \(\['path'\]\).*overwrite"):
        prepare_npz(str(npz(tmp_path / "B.npz", 200)), str(out))
    cache = Cache(prepare_npz(str(tmp_path / "B.npz"), str(out), overwrite=True))
    assert cache.info["npz"].endswith("B.npz") and int(cache.image(0).max()) == 200 * 257


def test_prepare_npz_refuses_a_source_changed_under_the_same_name(tmp_path: Path) -> None:
    out, src = tmp_path / "c", tmp_path / "A.npz"
    prepare_npz(str(npz(src, 10)), str(out))
    npz(src, 99)
    os.utime(src, ns=(1, 1))  # a different mtime too, as a rewrite has
    with pytest.raises(CacheError, match=r"changed.*A.npz"):
        prepare_npz(str(src), str(out))
    assert int(Cache(out).image(0).max()) == 10 * 257  # the finished cache is left as it was


def test_prepare_folder_refuses_changed_sources_and_another_kind_of_cache(tmp_path: Path) -> None:
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) + i).save(root / f"{i}.png")
    out = tmp_path / "c"
    prepare_folder(str(tmp_path / "imgs"), str(out), workers=0, progress=False)
    Image.fromarray(np.full((24, 24), 7, np.uint16)).save(root / "1.png")
    os.utime(root / "1.png", ns=(1, 1))
    with pytest.raises(CacheError, match=r"changed.*1.png"):
        prepare_folder(str(tmp_path / "imgs"), str(out), workers=0, progress=False)
    other = tmp_path / "phantoms"
    prepare_phantoms(str(other), num=4, size=16)
    with pytest.raises(CacheError, match="other settings"):
        prepare_folder(str(tmp_path / "imgs"), str(other), workers=0, progress=False)


def test_a_cache_without_recorded_settings_is_not_resumed(tmp_path: Path) -> None:
    writer = CacheWriter(tmp_path / "c", "test")
    writer.add(CacheRecord("train_000000", "train", "p"), np.arange(28 * 28, dtype=np.uint16).reshape(28, 28))
    writer.finalize({})
    with pytest.raises(CacheError, match="no record of the settings"):
        prepare_npz(str(npz(tmp_path / "A.npz", 10)), str(tmp_path / "c"))


def write(root: Path, images: dict[str, tuple[str, np.ndarray]]) -> Cache:
    writer = CacheWriter(root, "test")
    for key, (split, pixels) in images.items():
        writer.add(CacheRecord(key, split, key), pixels)
    return Cache(writer.finalize({"y": LabelSpec("binary", ["a", "b"])}))


def ramp(lo: int, hi: int) -> np.ndarray:
    return np.linspace(lo, hi, 32 * 32).reshape(32, 32).astype(np.uint16)


def test_statistics_come_from_the_training_split(tmp_path: Path) -> None:
    images = {"a": ("train", ramp(0, 20000)), "b": ("train", ramp(10000, 30000)),
              "v": ("val", ramp(60000, 65535)), "t": ("test", ramp(50000, 65535))}  # fmt: skip
    cache = write(tmp_path / "c", images)
    train = np.concatenate([ramp(0, 20000)[::4, ::4].ravel(), ramp(10000, 30000)[::4, ::4].ravel()]) / 65535
    assert cache.stats["mean"] == pytest.approx(train.mean(), abs=1e-9)
    assert cache.stats["std"] == pytest.approx(train.std(), rel=1e-9)
    assert cache.info["stats"]["from"] == "train" and cache.info["stats"]["records"] == 2


def test_a_constant_image_set_is_refused_not_nan(tmp_path: Path) -> None:
    flat = np.full((32, 32), 1234, np.uint16)
    with pytest.raises(CacheError, match="constant"):
        write(tmp_path / "c", {f"r{i}": ("train", flat) for i in range(3)})
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "cache.json").write_text(
        json.dumps(
            {"format": "miram-cache", "version": 1, "labels": {}, "stats": {"mean": 0.1, "std": float("nan")}}
        )
    )
    (tmp_path / "old" / "manifest.jsonl").write_text("")
    with pytest.raises(CacheError, match="std"):
        Cache(tmp_path / "old")
