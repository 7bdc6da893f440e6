"""``miram prepare cmmd`` on small TCIA trees: a sheet row per breast, 8-bit files, laterality in headers."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from trees_cmmd import HEADER, SPACING, build_cmmd_tree, image_path, write_clinical, write_image

from miram.data.cache import Cache, CacheRecord, PrepareError
from miram.data.collections.cmmd import ABNORMALITIES, SUBTYPES, Breast, assign_splits, prepare_cmmd
from miram.data.films import Film
from miram.data.splits import split_report

ROWS = [
    ["D1-0001", "L", 44, 2, "calcification", "Benign", None],
    ["D1-0002", " r ", "51", "2.0", "Mass", " malignant ", "Luminal A"],
    ["D2-0003", "L", 60, 2, "mass", "Benign", None],  # its breast has no image
    ["D2-0003", "R", 60, 1, "both", "Malignant", "triple negative"],  # the same patient's other breast
    ["D2-0005", "L", 38, 2, "mass", "probably", None],  # an unreadable classification
]


def lossy_film(path: Path, patient: str, side: str) -> Path:
    """pydicom's 12-bit JPEG Extended file (no decoder installed here) as a CMMD film."""
    ds = dcmread(get_testdata_file("JPEG-lossy.dcm"))
    ds.PatientID, ds.ImageLaterality = patient, side
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def traps(root: Path, clinical: str = "CMMD_clinicaldata_revision.xlsx") -> Path:
    """8 files, 5 usable: D1-0001 L (CC, MLO and one without ImageLaterality), D1-0002 R (CC, MLO and an
    undecodable one), D2-0003 R (CC without ViewPosition), D2-0004 R (no row)."""
    write_image(root, "D1-0001", "L", "CC", 1)
    write_image(root, "D1-0001", "L", "MLO", 2)
    write_image(root, "D1-0001", None, "CC", 3)
    write_image(root, "D1-0002", "R", "CC", 1, case=1)
    write_image(root, "D1-0002", "R", "MLO", 2, case=1)
    lossy_film(image_path(root, "D1-0002", 3), "D1-0002", "R")
    write_image(root, "D2-0003", "R", None, 1)
    write_image(root, "D2-0004", "R", "CC", 1)
    return write_clinical(root / clinical, ROWS)


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {r["input"]: r["reason"] for r in csv.DictReader(f)}


def by_file(cache: Cache, root: Path) -> dict[str, CacheRecord]:
    """Records by ``<patient>/<file name>``."""
    return {f"{r.meta['cmmd_id']}/{Path(r.source).name}": r for r in cache.records}


def run(root: Path, out: Path, **kw: object) -> Cache:
    kw = {"workers": 0, "progress": False, **kw}
    return Cache(prepare_cmmd(str(root), str(out), **kw))  # type: ignore[arg-type]


def test_cmmd_join_labels_splits(tmp_path: Path) -> None:
    root = tmp_path / "manifest-1616439774456"
    sheet = traps(root)
    out = tmp_path / "cache"
    cache = run(root, out, val_fraction=0.0, test_fraction=0.5)
    recs = by_file(cache, root)
    assert sorted(recs) == ["D1-0001/1-1.dcm", "D1-0001/1-2.dcm", "D1-0002/1-1.dcm", "D1-0002/1-2.dcm",
                            "D2-0003/1-1.dcm"]  # fmt: skip

    benign_cc = recs["D1-0001/1-1.dcm"]
    calcification = ABNORMALITIES.index("calcification")
    assert benign_cc.labels == {"pathology": 0, "cancer": 0, "abnormality": calcification, "subtype": None,
                                "laterality": 0, "view": 0}  # fmt: skip
    assert benign_cc.meta["age"] == 44 and benign_cc.meta["clinical_row"] == 2
    # 8-bit CMMD pixels, recorded; spacing from the header
    assert benign_cc.meta["bits_stored"] == 8 and benign_cc.meta["spacing_from"] == "PixelSpacing"
    assert benign_cc.meta["spacing_mm"] == pytest.approx([SPACING, SPACING])
    # " r " and " malignant " with stray spaces and lower case; "2.0" images
    mlo = recs["D1-0002/1-2.dcm"]
    assert mlo.labels == {"pathology": 1, "cancer": 1, "abnormality": ABNORMALITIES.index("mass"),
                          "subtype": SUBTYPES.index("Luminal A"), "laterality": 1, "view": 1}  # fmt: skip
    assert (mlo.meta["laterality"], mlo.meta["view"], mlo.meta["number"]) == ("R", "MLO", 2)
    assert mlo.meta["study_uid"] and mlo.meta["sop_uid"]
    # one row per breast: D2-0003's right film takes the right row (malignant), not the left (benign) one;
    # no ViewPosition: no view label, not a guess
    right = recs["D2-0003/1-1.dcm"]
    assert right.labels["pathology"] == 1 and right.labels["abnormality"] == ABNORMALITIES.index("both")
    assert right.labels["subtype"] == SUBTYPES.index("triple negative")
    assert right.labels["view"] is None and right.meta["view"] is None and right.meta["laterality"] == "R"

    # by patient, stratified by worst classification: of the two malignant patients one is test, the benign
    # one (round(0.5) = 0 of a stratum of one) stays train
    split_of = {r.patient_id: r.split for r in cache.records}
    assert all(split_of[r.patient_id] == r.split for r in cache.records)
    assert split_of["D1-0001"] == "train"
    assert sorted(split_of[p] for p in ("D1-0002", "D2-0003")) == ["test", "train"]
    assert all(r.pretrain == (r.split != "test") for r in cache.records)

    reasons = skipped(out)
    lat = str(image_path(root, "D1-0001", 3))
    assert reasons.pop(lat) == f"{lat}: no ImageLaterality in the header (the join key with {sheet})"
    stray = str(image_path(root, "D2-0004", 1))
    assert reasons.pop(stray) == f"{stray}: not in {sheet} (no row with ID1 D2-0004, side R)"
    assert reasons.pop(f"{sheet} row 4 / D2-0003 L").startswith("no image file: no DICOM file below")
    assert reasons.pop(f"{sheet} row 6 / D2-0005 L") == (
        "column 'classification': unreadable value 'probably' (expected Benign or Malignant)"
    )
    lossy = str(image_path(root, "D1-0002", 3))
    assert "JPEG Extended" in reasons.pop(lossy)
    assert reasons == {}

    info = json.loads((out / "cache.json").read_text())
    assert info["join"] == {
        "join": "clinical sheet (ID1, LeftRight) = DICOM header (PatientID, ImageLaterality)",
        "rows": 4, "images": 8, "rows_without_image": 1, "images_without_row": 1, "films": 6,
    }  # fmt: skip
    assert (
        info["licence"]["weights_restricted"] is False
        and "10.7937/tcia.eqde-4b16" in info["licence"]["notice"]
    )
    assert info["bits_stored"] == {"8": 5} and info["kind"] == "films"


def test_cmmd_csv_export_elsewhere_and_max_size(tmp_path: Path) -> None:
    root = tmp_path / "cmmd"
    sheet = traps(root, clinical="../sheets/clinical.csv")
    cache = run(root, tmp_path / "cache", clinical=str(sheet), max_size=285, test_fraction=0.0)
    recs = by_file(cache, root)
    assert len(recs) == 5 and {r.split for r in recs.values()} == {"train"}
    mlo = recs["D1-0002/1-2.dcm"]
    assert mlo.labels["pathology"] == 1 and mlo.labels["subtype"] == SUBTYPES.index("Luminal A")
    # downscaled: spacing follows the scale
    scale = mlo.meta["scale"]
    assert scale < 1 and max(cache.image(list(recs).index("D1-0002/1-2.dcm")).shape) == 285
    assert mlo.meta["spacing_mm"] == pytest.approx([SPACING / scale] * 2)
    assert math.isclose(scale, 285 / max(mlo.meta["native_shape"]))


@pytest.mark.parametrize("seed", range(8))
def test_cmmd_splits_by_patient_worst_classification(seed: int) -> None:
    # patients a, b: a benign left and a malignant right breast (worst: malignant); c-h: benign only
    breasts = {
        (p, s): Breast(1, p, s, {}, {}, malignant=p < "c" and s == "R") for p in "abcdefgh" for s in "LR"
    }
    films = [Film(f"{p}{s}.dcm", f"{p}{s}", p, "train", laterality=s) for p, s in breasts]
    assign_splits(films, breasts, 0.25, 0.5, seed)
    split_of = {f.patient_id: f.split for f in films}
    assert all(split_of[f.patient_id] == f.split for f in films)
    assert sorted(split_of[p] for p in "ab") == ["test", "train"]  # round(0.5 * 2) = 1, round(0.25 * 2) = 0
    assert sorted(split_of[p] for p in "cdefgh") == ["test"] * 3 + ["train"] + ["val"] * 2
    assert split_report(films)["test"] == {"patients": 4, "images": 8}
    assert all(f.pretrain == (f.split != "test") for f in films)


def test_cmmd_builder_tree(tmp_path: Path) -> None:
    build_cmmd_tree(tmp_path / "c", 2)
    cache = run(tmp_path / "c", tmp_path / "out", test_fraction=0.0)
    assert len(cache) == 8 and not skipped(tmp_path / "out")
    malignant = sorted((r.patient_id, r.meta["laterality"]) for r in cache.records if r.labels["cancer"] == 1)
    assert malignant == [("D2-0002", "R")] * 2


def test_cmmd_image_of_an_unreadable_row(tmp_path: Path) -> None:
    root = tmp_path / "cmmd"
    write_image(root, "D1-0001", "L", "CC", 1)
    bad = write_image(root, "D2-0005", "L", "CC", 1)
    sheet = write_clinical(root / "CMMD_clinicaldata_revision.xlsx", [ROWS[0], ROWS[4]])
    cache = run(root, tmp_path / "out")
    assert [r.patient_id for r in cache.records] == ["D1-0001"]
    reasons = skipped(tmp_path / "out")
    assert reasons.pop(str(bad)) == f"{bad}: its row ({sheet} row 3) has an unreadable value"
    assert list(reasons) == [f"{sheet} row 3 / D2-0005 L"] and cache.info["join"]["images_without_row"] == 0


def test_cmmd_fail_stops_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "cmmd"
    traps(root)
    sheet = root / "CMMD_clinicaldata_revision.xlsx"
    with pytest.raises(PrepareError, match="'classification': unreadable value 'probably'") as e:
        run(root, tmp_path / "out", on_error="fail")
    assert str(e.value).startswith(f"{sheet} row 6 / D2-0005 L: ")
    assert not (tmp_path / "out" / "cache.json").exists()


def test_cmmd_undecodable_file_fails_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "cmmd"
    write_image(root, "D1-0002", "R", "CC", 1)
    lossy = lossy_film(image_path(root, "D1-0002", 2), "D1-0002", "R")
    write_clinical(root / "CMMD_clinicaldata_revision.xlsx", [ROWS[1]])
    with pytest.raises(PrepareError, match="decoder") as e:
        run(root, tmp_path / "out", on_error="fail")
    assert str(lossy) in str(e.value)
    assert not (tmp_path / "out" / "cache.json").exists()


def test_cmmd_missing_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cmmd"
    write_image(root, "D1-0001", "L", "CC", 1)
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="download folder not found"):
        run(tmp_path / "nowhere", out)
    sheet = root / "CMMD_clinicaldata_revision.xlsx"
    with pytest.raises(PrepareError, match=f"{sheet}: CMMD clinical sheet not found"):
        run(root, out)
    header = [h for h in HEADER if h != "classification"]
    write_clinical(sheet, [["D1-0001", "L", 44, 2, "mass", None]], header=header)
    with pytest.raises(
        PrepareError, match=r"missing column\(s\) \['classification'\]; the sheet has \['ID1'"
    ):
        run(root, out)
    # column names in another case, with spaces
    write_clinical(sheet, [ROWS[0]], header=[f" {h.upper()} " for h in HEADER])
    assert len(run(root, out)) == 1
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(PrepareError, match=r"needs openpyxl: pip install 'miram\[collections\]'"):
        run(root, tmp_path / "out2")
