"""``prepare folder`` (class folders, manifest) and ``prepare npz`` (MedMNIST), with their bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from cbis_fakes import synthetic_breast, write_dicom
from PIL import Image

from miram.data.cache import Cache, CacheError, PrepareError
from miram.data.folder import prepare_folder
from miram.data.npz import prepare_npz


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {Path(row["input"]).name: row["reason"] for row in csv.DictReader(f)}


def make_folder(root: Path) -> None:
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            ramp = (np.arange(32 * 24, dtype=np.uint16).reshape(32, 24) * 50 + i).astype(np.uint16)
            Image.fromarray(ramp).save(root / cls / f"{cls}{i}_16bit.png")
        Image.fromarray(np.full((30, 20), 128, np.uint8)).save(root / cls / f"{cls}_8bit.jpg")
    write_dicom(root / "benign" / "scan.dcm", synthetic_breast(40, 30, 0), PatientID="PAT7")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(root / "benign" / "tiny.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "malignant" / "black.png")
    (root / "malignant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def test_prepare_folder_class_dirs(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs")
    cache = Cache(prepare_folder(str(tmp_path / "imgs"), str(tmp_path / "c"), workers=0, progress=False,
                                 val_fraction=0.3))  # fmt: skip
    assert cache.labels["label"].classes == ["benign", "malignant"] and len(cache) == 9
    by_name = {Path(r.source).name: i for i, r in enumerate(cache.records)}
    assert cache.image(by_name["benign_8bit.jpg"]).max() == 128 * 257  # 8-bit scaled into uint16
    assert cache.image(by_name["benign0_16bit.png"]).max() == (32 * 24 - 1) * 50  # 16-bit kept
    assert cache.records[by_name["scan.dcm"]].patient_id == "PAT7"
    assert {r.split for r in cache.records} == {"train", "val"}
    reasons = skipped(tmp_path / "c")
    assert "smaller than min_size 16" in reasons["tiny.png"] and "all-zero image" in reasons["black.png"]
    assert "broken.png: not a readable image" in reasons["broken.png"]


def test_prepare_folder_manifest_and_fail(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,patient_id,split\nbenign/benign0_16bit.png,b,p1,train\n"
                        "malignant/malignant0_16bit.png,m,p2,test\nmissing.png,b,p3,train\n")  # fmt: skip
    cache = Cache(prepare_folder(str(tmp_path / "imgs"), str(tmp_path / "c"), manifest=str(manifest),
                                 workers=0, progress=False))  # fmt: skip
    assert sorted((r.split, r.patient_id, r.pretrain) for r in cache.records) == [
        ("test", "p2", False),
        ("train", "p1", True),
    ]
    assert "missing.png: file not found" in skipped(tmp_path / "c")["m.csv:4"]
    with pytest.raises(PrepareError, match="m.csv:4: .*missing.png: file not found"):
        prepare_folder(str(tmp_path / "imgs"), str(tmp_path / "d"), manifest=str(manifest), on_error="fail")
    manifest.write_text("file,label\nx.png,b\n")
    with pytest.raises(PrepareError, match=r"m.csv: missing column\(s\) \['path'\]"):
        prepare_folder(str(tmp_path / "imgs"), str(tmp_path / "e"), manifest=str(manifest))


def test_prepare_npz_medmnist_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "breastmnist.npz",
             train_images=rng.integers(1, 255, (6, 28, 28), dtype=np.uint8),
             train_labels=np.array([[0], [1]] * 3),
             val_images=rng.integers(1, 255, (2, 28, 28), dtype=np.uint8), val_labels=np.array([0, 1]),
             test_images=np.zeros((2, 28, 28), np.uint8), test_labels=np.array([[1], [0]]))  # fmt: skip
    cache = Cache(prepare_npz(str(tmp_path / "breastmnist.npz"), str(tmp_path / "c")))
    assert len(cache) == 8 and cache.info["splits"] == {"train": 6, "val": 2, "test": 0}
    assert cache.records[1].labels == {"label": 1} and cache.labels["label"].classes == ["0", "1"]
    src = np.load(tmp_path / "breastmnist.npz")["train_images"][0]
    assert np.array_equal(cache.image(0), src.astype(np.uint16) * 257)
    assert "all-zero image" in skipped(tmp_path / "c")["breastmnist.npz:test_images[0]"]
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(PrepareError, match=r"bad.npz: missing array\(s\) \['train_labels'\]"):
        prepare_npz(str(tmp_path / "bad.npz"), str(tmp_path / "d"))
    np.savez(tmp_path / "zero.npz", train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros(2))
    with pytest.raises(CacheError, match="no usable records"):
        prepare_npz(str(tmp_path / "zero.npz"), str(tmp_path / "e"))


def test_prepare_folder_groups_cbis_ddsm_views_by_patient_and_reports_splits(tmp_path: Path) -> None:
    # CBIS-DDSM's PatientID is per image: the views of one patient must still land in one split
    for p in range(8):
        for side in ("LEFT", "RIGHT"):
            for v in ("CC", "MLO"):
                subject = f"Mass-Training_P_{p:05d}_{side}_{v}"
                write_dicom(tmp_path / "imgs" / ("benign" if p % 2 else "malignant") / f"{subject}.dcm",
                            synthetic_breast(24, 20, p), PatientID=subject)  # fmt: skip
    out = tmp_path / "c"
    cache = Cache(
        prepare_folder(str(tmp_path / "imgs"), str(out), workers=0, progress=False, val_fraction=0.5)
    )
    assert {r.patient_id for r in cache.records} == {f"P_{p:05d}" for p in range(8)}
    splits: dict[str, set[str]] = {}
    for r in cache.records:
        splits.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in splits.values())
    report = cache.info["patients"]
    assert report["rule"].startswith("auto") and sum(s["patients"] for s in report["splits"].values()) == 8
    assert sum(s["images"] for s in report["splits"].values()) == 32


def test_prepare_folder_patient_from_a_regex_over_the_path(tmp_path: Path) -> None:
    for pid in ("a1", "b2", "c3"):
        for view in ("cc", "mlo"):
            (tmp_path / "imgs" / "x").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24)).save(
                tmp_path / "imgs" / "x" / f"pat-{pid}_{view}.png"
            )
    Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24)).save(
        tmp_path / "imgs" / "x" / "odd.png"
    )
    out = tmp_path / "c"
    cache = Cache(prepare_folder(str(tmp_path / "imgs"), str(out), workers=0, progress=False,
                                 patient_regex=r"pat-(?P<patient>\w\d)_", patient_source="path"))  # fmt: skip
    assert sorted({r.patient_id for r in cache.records}) == ["a1", "b2", "c3"] and len(cache) == 6
    assert "does not match" in skipped(out)["odd.png"]
    with pytest.raises(PrepareError, match=r"odd.png.*does not match"):
        prepare_folder(str(tmp_path / "imgs"), str(tmp_path / "d"), workers=0, on_error="fail",
                       patient_regex=r"pat-(\w\d)_", patient_source="path")  # fmt: skip
