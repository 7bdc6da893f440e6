"""``miram prepare rsna`` on small trees with the Kaggle competition's exact names, columns and spellings."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from trees_rsna import RsnaImage, build_rsna_tree, write_rsna

from miram.data.cache import Cache, PrepareError
from miram.data.collections.rsna import prepare_rsna


def pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None
    return str(path)


def put_lossy(root: Path, patient: str, image: str) -> Path:
    """pydicom's 12-bit JPEG Extended file (no permissive decoder) under a listed image id."""
    path = root / "train_images" / patient / f"{image}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(pydicom_file("JPEG-lossy.dcm"), path)
    return path


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv") as f:
        return {r["input"]: r["reason"] for r in csv.DictReader(f)}


def traps() -> list[RsnaImage]:
    return [
        RsnaImage("10001", "1001", "lcc", "1", "1", "1.0", "0.0", "C", age="61.0", syntax="j2k"),
        RsnaImage("10001", "1002", "lmlo", "1", "1", "0", "", " C", syntax="j2k"),
        RsnaImage("10002", "2001", "rcc", "0", "0", "0", "1.0", ""),
        RsnaImage("10002", "2002", "rmlo", birads="2", density="B", view="ML"),
        RsnaImage("10002", "2003", "lcc", file=False),  # the undecodable file goes here
        RsnaImage("10003", "3001", "lcc", birads="1", density="D", imager_spacing=None),
        RsnaImage("10003", "3002", "rcc", file=False),
        RsnaImage("10003", "3999", "rmlo", row=False),
    ]


def test_rsna_labels_splits_spacing_and_skips(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "rsna", traps())
    lossy = put_lossy(root, "10002", "2003")
    out = tmp_path / "cache"
    prepare_rsna(str(root), str(out), max_size=277, spacing_mm=0.1, val_fraction=0.34, test_fraction=0.34,
                 workers=0, progress=False)  # fmt: skip
    cache = Cache(out)
    recs = {r.meta["image_id"]: r for r in cache.records}
    assert sorted(recs) == ["1001", "1002", "2001", "2002", "3001"]

    # one split per patient; the cancer stratum (one patient) keeps it in train, the two others fill val/test
    split_of = {}
    for r in cache.records:
        assert split_of.setdefault(r.patient_id, r.split) == r.split
        assert r.pretrain == (r.split != "test")
    assert split_of["10001"] == "train"
    assert {split_of["10002"], split_of["10003"]} == {"val", "test"}

    labels = {k: r.labels for k, r in recs.items()}
    assert labels["1001"] == {"cancer": 1, "biopsy": 1, "invasive": 1, "birads": 0, "density": 2,
                              "laterality": 0, "view": 0}  # fmt: skip
    assert labels["1002"] == {"cancer": 1, "biopsy": 1, "invasive": 0, "birads": None, "density": 2,
                              "laterality": 0, "view": 1}  # fmt: skip
    assert labels["2001"] == {"cancer": 0, "biopsy": 0, "invasive": 0, "birads": 1, "density": None,
                              "laterality": 1, "view": 0}  # fmt: skip
    assert (labels["2002"]["view"], recs["2002"].meta["view"]) == (2, "ML")
    assert (labels["2002"]["birads"], labels["2002"]["density"], labels["3001"]["density"]) == (2, 1, 3)
    assert recs["2002"].meta["laterality"] == "R"
    meta = recs["1001"].meta
    assert {k: meta[k] for k in ("patient_id", "image_id", "site_id", "machine_id", "age", "implant",
                                 "difficult_negative_case")} == {
        "patient_id": "10001", "image_id": "1001", "site_id": 2, "machine_id": 49, "age": 61.0, "implant": 0,
        "difficult_negative_case": False}  # fmt: skip

    # ImagerPixelSpacing 0.07 and the assumed 0.1 mm, both doubled by max_size 277 (554 native rows)
    assert meta["scale"] == pytest.approx(0.5)
    assert (meta["spacing_from"], meta["spacing_mm"]) == ("ImagerPixelSpacing", pytest.approx([0.14, 0.14]))
    m3001 = recs["3001"].meta
    assert (m3001["spacing_from"], m3001["spacing_mm"]) == ("assumed", pytest.approx([0.2, 0.2]))
    # JPEG 2000 lossless decodes to the same pixels as the uncompressed copy of the same film
    index = {r.meta["image_id"]: i for i, r in enumerate(cache.records)}
    assert np.array_equal(cache.image(index["1001"]), cache.image(index["3001"]))

    csv_path = root / "train.csv"
    reasons = skipped(out)
    assert reasons.pop(f"{csv_path} row 8 / 10003/3002") == (
        f"no image file {root / 'train_images' / '10003' / '3002.dcm'}"
    )
    assert reasons.pop(str(root / "train_images" / "10003" / "3999.dcm")) == f"not in {csv_path}"
    assert "JPEG Extended" in reasons.pop(str(lossy))
    assert reasons == {}
    info = json.loads((out / "cache.json").read_text())
    assert {k: info["join"][k] for k in ("rows", "images", "rows_without_image", "images_without_row")} == {
        "rows": 7, "images": 7, "rows_without_image": 1, "images_without_row": 1}  # fmt: skip
    assert info["patients"]["train"] == {"patients": 1, "images": 2}
    assert info["cancer_films_per_split"]["train"] == 2
    assert info["licence"]["weights_restricted"] is False and "non-commercial" in info["licence"]["notice"]


def test_rsna_fail_stops_before_writing(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "rsna", traps())
    put_lossy(root, "10002", "2003")
    expected = f"{root / 'train.csv'} row 8 / 10003/3002: no image file"
    with pytest.raises(PrepareError, match=re.escape(expected)):
        prepare_rsna(str(root), str(tmp_path / "out"), on_error="fail", workers=0, progress=False)
    assert not (tmp_path / "out" / "cache.json").exists()

    root = write_rsna(
        tmp_path / "rsna2", [RsnaImage("1", "11", "lcc"), RsnaImage("1", "12", "rcc", file=False)]
    )
    lossy = put_lossy(root, "1", "12")
    with pytest.raises(PrepareError, match="decoder") as e:
        prepare_rsna(str(root), str(tmp_path / "out2"), on_error="fail", workers=0, progress=False)
    assert str(lossy) in str(e.value)
    assert not (tmp_path / "out2" / "cache.json").exists()


def test_rsna_unreadable_values_and_missing_inputs(tmp_path: Path) -> None:
    images = [
        RsnaImage("1", "11", "lcc"),
        RsnaImage("1", "12", "lmlo", cancer="yes"),
        RsnaImage("2", "21", "rcc", birads="7", density="E"),
    ]
    root = write_rsna(tmp_path / "rsna", images)
    out = tmp_path / "out"
    prepare_rsna(str(root), str(out), workers=0, progress=False)
    csv_path = root / "train.csv"
    assert skipped(out) == {
        f"{csv_path} row 3 / 1/12": "cancer 'yes' unreadable (expected 0 or 1)",
        f"{csv_path} row 4 / 2/21": "BIRADS '7' unreadable (expected 0-6); "
        "density 'E' unreadable (expected A-D)",
        # the files of unreadable rows are not called unlisted
    }
    assert [r.meta["image_id"] for r in Cache(out).records] == ["11"]

    with pytest.raises(PrepareError, match="RSNA root not found"):
        prepare_rsna(str(tmp_path / "nowhere"), str(tmp_path / "o1"), workers=0, progress=False)
    text = csv_path.read_text()
    csv_path.unlink()
    with pytest.raises(PrepareError, match=re.escape(f"{csv_path}: RSNA labels not found")):
        prepare_rsna(str(root), str(tmp_path / "o2"), workers=0, progress=False)
    csv_path.write_text(text.replace("invasive", "invasion"))
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['invasive'\]; it has .*'invasion'"):
        prepare_rsna(str(root), str(tmp_path / "o3"), workers=0, progress=False)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_rsna_splits_stratified_by_patient_cancer(tmp_path: Path) -> None:
    images = [RsnaImage(str(p), f"{p}1", "lcc", cancer=str(int(p < 3))) for p in range(1, 5)]
    root = write_rsna(tmp_path / "rsna", images)
    for seed in range(6):
        out = tmp_path / f"out{seed}"
        prepare_rsna(str(root), str(out), val_fraction=0.5, test_fraction=0.0, seed=seed, workers=0,
                     progress=False)  # fmt: skip
        info = json.loads((out / "cache.json").read_text())
        assert info["patients"]["val"] == {"patients": 2, "images": 2}, seed
        assert info["cancer_films_per_split"]["val"] == 1, seed


def test_rsna_builder_and_column_case(tmp_path: Path) -> None:
    root = build_rsna_tree(tmp_path / "rsna", n_patients=2, cancer_every=2, j2k_every=2)
    csv_path = root / "train.csv"
    header, rest = csv_path.read_text().split("\n", 1)
    csv_path.write_text(
        "\ufeff" + header.replace("BIRADS", "birads").replace("patient_id", " Patient_ID ") + "\n" + rest
    )
    out = tmp_path / "out"
    prepare_rsna(str(root), str(out), val_fraction=0.0, test_fraction=0.0, workers=0, progress=False)
    cache = Cache(out)
    assert len(cache.records) == 8
    cancer = {(r.patient_id, r.meta["laterality"]): r.labels["cancer"] for r in cache.records}
    assert cancer == {("10000", "L"): 0, ("10000", "R"): 0, ("10001", "L"): 1, ("10001", "R"): 0}
    assert {r.labels["birads"] for r in cache.records} == {0, None}
