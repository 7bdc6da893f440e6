"""``prepare_cbis_ddsm`` on fake downloads: every layout, crop/mask by shape, splits, resume, bad inputs."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cbis_fakes import FakeLesion, standard_lesions, synthetic_breast, write_dicom

from miram.data.cache import Cache, CacheError, PrepareError
from miram.data.cbis_ddsm import prepare_cbis_ddsm
from miram.data.cbis_ddsm.case_csv import CsvError

Tree = Callable[..., tuple[Path, Path]]


def run(root: Path, csv_dir: Path, out: Path, **kw: object) -> Cache:
    # the fake images are 120x72: crops keep the ROI's own square unless a test asks for min_crop
    kw = {"workers": 0, "progress": False, "min_crop": 0, **kw}
    return Cache(prepare_cbis_ddsm(root=str(root), csv_dir=str(csv_dir), out=str(out), **kw))  # type: ignore[arg-type]


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["input"]: row["reason"] for row in csv.DictReader(f)}


def files_of(root: Path, subject: str) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and subject in p.parts and p.suffix in (".dcm", ".jpg")
    )


@pytest.mark.parametrize("layout", ["A", "B", "C", "D", "kaggle", "metadata"])
def test_prepare_every_layout(fake_tree: Tree, tmp_path: Path, layout: str) -> None:
    root, csv_dir = fake_tree(layout)
    cache = run(root, csv_dir, tmp_path / "cache", min_size=8)
    keys = {r.key: i for i, r in enumerate(cache.records)}
    assert len(keys) == 6 and skipped(tmp_path / "cache") == {}
    # crop = square around the mask bbox (radius 10 disc -> 21x21), whatever the file order or series
    for key in (
        "Mass-Training_P_00001_LEFT_CC_1",
        "Calc-Training_P_00003_RIGHT_CC_1",
        "Mass-Training_P_00002_LEFT_MLO_1",
    ):
        img = cache.image(keys[key])
        assert img.shape == (21, 21) and img.dtype == np.uint16 and img.max() > 0
    rec = cache.records[keys["Mass-Training_P_00001_LEFT_CC_2"]]  # swapped pair, radius 6
    assert cache.image(keys[rec.key]).shape == (13, 13) and rec.meta["crop_box"] == [24, 14, 13]
    assert rec.labels["pathology"] == 0 and rec.labels["type_pathology"] == 0
    assert rec.labels["mass_margins"] == [1, 4] and rec.labels["mass_shape"] == [1, 2]
    calc = cache.records[keys["Calc-Training_P_00003_RIGHT_CC_1"]]
    assert calc.labels["calc_type"] == [3] and calc.labels["calc_distribution"] is None
    # official test untouched; P_00003 is in both splits: reported and out of pre-training pools
    test_keys = {r.key for r in cache.records if r.split == "test"}
    assert test_keys == {"Mass-Test_P_00004_LEFT_CC_1", "Mass-Test_P_00003_LEFT_MLO_1"}
    assert cache.info["cross_split_patients"] == ["P_00003"]
    assert not calc.pretrain and cache.indices("train", pretrain_only=True)


def test_prepare_tiles_flip_context_max_size(fake_tree: Tree, tmp_path: Path) -> None:
    root, csv_dir = fake_tree("A", shape=(200, 120))
    cache = run(root, csv_dir, tmp_path / "c", tiles_per_image=2, tile_sizes=[32], crop_context=0.5,
                max_size=24, flip_to="right")  # fmt: skip
    tiles = [i for i, r in enumerate(cache.records) if "tile" in r.meta]
    assert tiles and all(cache.image(i).shape == (24, 24) for i in tiles)  # 32 px tiles, max_size 24
    assert all(cache.records[i].labels["lesion_type"] == 2 and cache.records[i].pretrain for i in tiles)
    assert not any(cache.records[i].split == "test" for i in tiles)
    lesion = next(r for r in cache.records if r.key == "Mass-Training_P_00001_LEFT_CC_1")
    assert lesion.meta["flipped"] and lesion.meta["crop_box"][2] == 42  # 21 * (1 + 2 * 0.5)


def test_prepare_parallel_resume_idempotent(fake_tree: Tree, tmp_path: Path) -> None:
    root, csv_dir = fake_tree("B")
    out = tmp_path / "c"
    first = run(root, csv_dir, out, workers=2, min_size=8, val_fraction=0.5)
    manifest = (out / "manifest.jsonl").read_text()
    # interrupted run: a journal entry and the finished files are lost -> only that image is redone
    (out / "journal" / "Mass-Training_P_00002_LEFT_MLO.json").unlink()
    (out / "cache.json").unlink()
    again = run(root, csv_dir, out, min_size=8, val_fraction=0.5)
    assert (out / "manifest.jsonl").read_text() == manifest and len(again) == len(first)
    with pytest.raises(CacheError, match="other settings"):
        run(root, csv_dir, out, min_size=8, val_fraction=0.3)
    assert len(run(root, csv_dir, out, min_size=8, val_fraction=0.3, overwrite=True)) == len(first)


def bad_tree(fake_tree: Tree) -> tuple[Path, Path]:
    lesions = [
        *standard_lesions()[:3],
        FakeLesion("P_00010"),  # full image truncated
        FakeLesion("P_00011"),  # full image replaced by a text file
        FakeLesion("P_00012"),  # series folder emptied (file missing)
        FakeLesion("P_00013"),  # CSV row pointing nowhere (subject folder removed)
        FakeLesion("P_00014", mask_shape=(50, 40)),  # mask matches no image: crop/mask unresolvable
        FakeLesion("P_00015", pathology="MALIGANT"),  # unknown label value
        FakeLesion("P_00016"),  # all-zero image
        FakeLesion("P_00017", center=(5, 5), radius=2),  # lesion smaller than one patch
    ]
    root, csv_dir = fake_tree("A", lesions)
    full = {
        p: files_of(root, f"Mass-Training_{p}_LEFT_CC") for p in ("P_00010", "P_00011", "P_00012", "P_00016")
    }
    data = full["P_00010"][0].read_bytes()
    full["P_00010"][0].write_bytes(data[: len(data) // 2])
    full["P_00011"][0].write_text("not a dicom\n")
    full["P_00012"][0].unlink()
    shutil.rmtree(files_of(root, "Mass-Training_P_00013_LEFT_CC")[0].parents[1])  # the study folder
    write_dicom(files_of(root, "Mass-Training_P_00016_LEFT_CC")[0], np.zeros((120, 72), np.uint16))
    return root, csv_dir


def test_prepare_bad_inputs_skipped_with_reason(fake_tree: Tree, tmp_path: Path) -> None:
    root, csv_dir = bad_tree(fake_tree)
    cache = run(root, csv_dir, tmp_path / "c")
    reasons = skipped(tmp_path / "c")
    expected = {
        "Mass-Training_P_00010_LEFT_CC_1": "truncated",
        "Mass-Training_P_00011_LEFT_CC_1": "not a DICOM file",
        "Mass-Training_P_00012_LEFT_CC_1": "series folder holds no image files",
        "Mass-Training_P_00013_LEFT_CC_1": "no study folder",
        "Mass-Training_P_00014_LEFT_CC_1": "no ROI mask matches the full image shape 120x72",
        "Mass-Training_P_00016_LEFT_CC_1": "all-zero image",
    }
    for key, text in expected.items():
        assert text in reasons[key], (key, reasons[key])
    (csv_row,) = [r for k, r in reasons.items() if "mass_case_description_train_set.csv:" in k]
    assert "unknown pathology 'MALIGANT'" in csv_row
    # P_00001_1, P_00002_1 and the two lesions smaller than one patch, enlarged to min_size, not dropped
    small = {
        r.key: r.meta["crop_box"][2]
        for r in cache.records
        if r.meta["mask_bbox"][1] - r.meta["mask_bbox"][0] < 16
    }
    assert small == {"Mass-Training_P_00017_LEFT_CC_1": 16, "Mass-Training_P_00001_LEFT_CC_2": 16}
    assert len(cache) == 4


def test_prepare_fail_policy_stops_naming_file(fake_tree: Tree, tmp_path: Path) -> None:
    root, csv_dir = bad_tree(fake_tree)
    with pytest.raises(PrepareError, match=r"mass_case_description_train_set.csv:\d+: unknown pathology"):
        run(root, csv_dir, tmp_path / "c", on_error="fail")
    assert not (tmp_path / "c").exists()  # stopped at the start, nothing decoded


def test_prepare_fail_policy_during_decode(fake_tree: Tree, tmp_path: Path) -> None:
    root, csv_dir = fake_tree("A", [FakeLesion("P_00001"), FakeLesion("P_00002")])
    bad = files_of(root, "Mass-Training_P_00002_LEFT_CC")[0]
    bad.write_text("garbage")
    with pytest.raises(PrepareError, match=f"{bad}: not a DICOM file"):
        run(root, csv_dir, tmp_path / "c", on_error="fail")


def test_prepare_empty_result_and_start_errors(fake_tree: Tree, tmp_path: Path) -> None:
    root, csv_dir = fake_tree("A", [FakeLesion("P_00001")])
    for f in files_of(root, "Mass-Training_P_00001_LEFT_CC"):
        f.write_text("x")
    with pytest.raises(CacheError, match="no usable records"):
        run(root, csv_dir, tmp_path / "c")
    with pytest.raises(CsvError, match="no \\*case_description\\*.csv"):
        run(root, tmp_path, tmp_path / "d")
    text = (csv_dir / "mass_case_description_train_set.csv").read_text()
    (csv_dir / "mass_case_description_train_set.csv").write_text(text.replace("image view", "view"))
    with pytest.raises(
        CsvError, match=r"mass_case_description_train_set.csv: missing column\(s\) \['image view'\]"
    ):
        run(root, csv_dir, tmp_path / "e")


def test_tiles_clear_of_every_roi_and_small_rois_enlarged(fake_tree: Tree, tmp_path: Path) -> None:
    # one breast view filed twice (a mass and a calcification: two copies of the same pixels), plus a
    # 5 px lesion that a min_size of 16 used to drop while tiles went on covering it
    lesions = [
        FakeLesion("P_00001", center=(100, 40), radius=12),
        FakeLesion("P_00001", kind="calc", center=(200, 60), radius=8),
        FakeLesion("P_00001", abn_id=2, center=(300, 50), radius=2),
    ]
    pixels = synthetic_breast(400, 240, seed=3)
    root, csv_dir = fake_tree("A", lesions, full_pixels=lambda les: pixels)
    cache = run(
        root, csv_dir, tmp_path / "c", tiles_per_image=40, tile_sizes=[24], min_crop=48, val_fraction=0
    )
    boxes = [r.meta["mask_bbox"] for r in cache.records if "tile" not in r.meta]
    tiles = [r.meta["crop_box"] for r in cache.records if "tile" in r.meta]
    assert len(boxes) == 3 and len(tiles) >= 20
    for top, left, size in tiles:
        for y0, y1, x0, x1 in boxes:
            assert top + size <= y0 or top >= y1 or left + size <= x0 or left >= x1, (
                (top, left, size),
                (y0, y1, x0, x1),
            )
    sides = {r.key: r.meta["crop_box"][2] for r in cache.records if "tile" not in r.meta}
    assert sides == {"Mass-Training_P_00001_LEFT_CC_1": 48, "Calc-Training_P_00001_LEFT_CC_1": 48,
                     "Mass-Training_P_00001_LEFT_CC_2": 48}  # fmt: skip
