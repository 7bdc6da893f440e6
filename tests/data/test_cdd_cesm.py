"""``miram prepare cdd-cesm`` on small trees: low-energy JPEGs joined by name to the sheet ``all`` of
``Radiology manual annotations.xlsx``, subtracted images passed over unless asked for."""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import pytest
from trees_cdd_cesm import HEADER, build_cdd_cesm_tree, image_path, row, write_image, write_sheet

from miram.data.cache import Cache, CacheRecord, PrepareError
from miram.data.collections.cdd_cesm import (
    PATHOLOGIES,
    assign_splits,
    birads_of,
    patient_key,
    prepare_cdd_cesm,
    read_rows,
)
from miram.data.films import Film
from miram.data.splits import draw_splits, split_report

SHEET = "Radiology manual annotations.xlsx"
PATHOLOGY = "Pathology Classification/ Follow up"
ROWS = [  # sheet rows 2-10
    row("P1_L_DM_CC", "Normal", "B", 1),
    row("P1_L_DM_MLO  ", "Normal", 2, "1"),  # trailing spaces in Image_name; density as a number
    row("P2_R_DM_CC", " malignant ", 3, "4$2", Findings="mass$calcification"),  # one BI-RADS per finding
    row("P2_R_DM_MLO", "Malignant", "C", "4a"),
    row("P2_R_CM_CC", "Malignant", "_", 5),  # subtracted: density blank ("_")
    row("P2_L_DM_CC", "Benign", "B", 2),  # no image file
    row("P3_L_DM_CC", "Benign", "D", 3, Side=" left "),
    row("P3_L_DM_MLO", "Benign", "D", 3),  # a corrupt file
    row("P4_R_DM_MLO", "Probably", "A", 1),  # an unreadable pathology (its file exists)
]


def traps(root: Path, sheet: str = SHEET, rows: list[list[object]] = ROWS, **kw: object) -> Path:
    """The images of ``ROWS`` (but P2_L_DM_CC), P3_L_DM_MLO corrupt, plus P5_L_DM_CC and P5_L_CM_CC with no
    row."""
    for k, name in enumerate(["P1_L_DM_CC", "P1_L_DM_MLO", "P2_R_DM_CC", "P2_R_DM_MLO", "P2_R_CM_CC",
                              "P3_L_DM_CC", "P4_R_DM_MLO", "P5_L_DM_CC", "P5_L_CM_CC"]):  # fmt: skip
        write_image(root, name, case=k % 2)
    image_path(root, "P3_L_DM_MLO").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    return write_sheet(root / sheet, rows, **kw)  # type: ignore[arg-type]


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {r["input"]: r["reason"] for r in csv.DictReader(f)}


def run(root: Path, out: Path, **kw: object) -> Cache:
    kw = {"workers": 0, "progress": False, **kw}
    return Cache(prepare_cdd_cesm(str(root), str(out), **kw))  # type: ignore[arg-type]


def by_name(cache: Cache) -> dict[str, CacheRecord]:
    return {r.meta["image_name"]: r for r in cache.records}


def test_cdd_cesm_join_labels_splits(tmp_path: Path) -> None:
    root = tmp_path / "CDD-CESM"
    sheet = traps(root)
    out = tmp_path / "cache"
    cache = run(root, out, val_fraction=0.0, test_fraction=0.5)
    recs = by_name(cache)
    assert sorted(recs) == ["P1_L_DM_CC", "P1_L_DM_MLO", "P2_R_DM_CC", "P2_R_DM_MLO", "P3_L_DM_CC"]

    labels = {k: r.labels for k, r in recs.items()}
    assert labels["P1_L_DM_CC"] == {"density": 1, "birads": 1, "pathology3": 0, "pathology": None,
                                    "cancer": 0, "laterality": 0, "view": 0}  # fmt: skip
    assert labels["P1_L_DM_MLO"]["density"] == 1 and labels["P1_L_DM_MLO"]["view"] == 1
    assert labels["P2_R_DM_CC"] == {"density": 2, "birads": 4, "pathology3": 2, "pathology": 1, "cancer": 1,
                                    "laterality": 1, "view": 0}  # fmt: skip
    assert labels["P2_R_DM_MLO"] == {"density": 2, "birads": 4, "pathology3": 2, "pathology": 1, "cancer": 1,
                                     "laterality": 1, "view": 1}  # fmt: skip
    assert labels["P3_L_DM_CC"] == {"density": 3, "birads": 3, "pathology3": 1, "pathology": 0, "cancer": 0,
                                    "laterality": 0, "view": 0}  # fmt: skip
    assert all("type" not in r.labels for r in cache.records) and "type" not in cache.labels

    mlo = recs["P2_R_DM_MLO"].meta
    assert (mlo["laterality"], mlo["view"], mlo["type"], mlo["sheet_row"]) == ("R", "MLO", "DM", 5)
    assert (mlo["birads"], mlo["density"], mlo["cdd_patient_id"], mlo["age"]) == ("4a", "C", "2", "50")
    assert recs["P2_R_DM_CC"].meta["sheet_findings"] == "mass$calcification"
    assert recs["P1_L_DM_MLO"].meta["sheet_row"] == 3
    # JPEGs: no spacing unless stated; 8-bit rasters
    assert mlo["spacing_mm"] is None and mlo["spacing_from"] is None and mlo["bits_stored"] is None
    assert mlo["findings"] == []

    # by patient, stratified by worst pathology (drawn before decoding: P3 counts as benign)
    split_of = {r.patient_id: r.split for r in cache.records}
    assert all(split_of[r.patient_id] == r.split for r in cache.records)
    strata = {"P1": "normal", "P2": "malignant", "P3": "benign"}
    assert split_of == draw_splits(strata, 0.0, 0.5, 0)
    assert all(r.pretrain == (r.split != "test") for r in cache.records)

    reasons = skipped(out)
    low = root / "Low energy images of CDD-CESM"
    assert reasons.pop(f"{sheet} row 7 / P2_L_DM_CC") == f"no image file {low / 'P2_L_DM_CC.jpg'}"
    assert reasons.pop(f"{sheet} row 10 / P4_R_DM_MLO") == (
        f"column '{PATHOLOGY}': unreadable value 'Probably' (expected Normal, Benign or Malignant)"
    )
    assert reasons.pop(str(low / "P5_L_DM_CC.jpg")) == f"not in {sheet}"
    assert "not a readable image" in reasons.pop(str(low / "P3_L_DM_MLO.jpg"))
    assert reasons == {}  # the subtracted row and images are passed over, not reported

    info = json.loads((out / "cache.json").read_text())
    assert info["join"] == {
        "join": "sheet Image_name = image file stem (*.jpg below root)", "rows": 7, "images": 8,
        "rows_without_image": 1, "images_without_row": 1, "films": 6, "subtracted_images_passed_over": 2,
        "sheet_rows": 9, "subtracted_rows_passed_over": 1,
    }  # fmt: skip
    assert info["licence"]["weights_restricted"] is False and "CC BY 4.0" in info["licence"]["name"]
    assert "10.7937/29kw-ae92" in info["licence"]["notice"]
    assert info["labels"]["pathology3"] == {"kind": "multiclass", "classes": list(PATHOLOGIES)}


def test_cdd_cesm_include_subtracted(tmp_path: Path) -> None:
    root = tmp_path / "CDD-CESM"
    sheet = traps(root)
    out = tmp_path / "cache"
    cache = run(root, out, include_subtracted=True, test_fraction=0.0)
    recs = by_name(cache)
    assert sorted(recs) == ["P1_L_DM_CC", "P1_L_DM_MLO", "P2_R_CM_CC", "P2_R_DM_CC", "P2_R_DM_MLO",
                            "P3_L_DM_CC"]  # fmt: skip
    sub = recs["P2_R_CM_CC"]
    # the subtracted row's blank density is its low-energy twin's (C); its own BI-RADS (5) is kept
    assert sub.labels == {"density": 2, "birads": 5, "pathology3": 2, "pathology": 1, "cancer": 1,
                          "laterality": 1, "view": 0, "type": 1}  # fmt: skip
    assert sub.meta["type"] == "CESM" and sub.meta["density_from"] == "P2_R_DM_CC"
    assert recs["P2_R_DM_CC"].labels["type"] == 0
    assert cache.labels["type"].classes == ["low energy", "subtracted"]
    subtracted = root / "Subtracted images of CDD-CESM"
    assert skipped(out)[str(subtracted / "P5_L_CM_CC.jpg")] == f"not in {sheet}"
    assert cache.info["join"]["subtracted_images_passed_over"] == 0


def test_cdd_cesm_csv_export_other_spellings_spacing(tmp_path: Path) -> None:
    root = tmp_path / "cdd"
    header = [" image_name ", "PATIENT_ID", "side", "type", "Age", "Breast density", "birads", "Findings",
              "View", "Tags", "Machine", "Pathology Classification / Follow-up"]  # fmt: skip
    sheet = traps(root, sheet="../export/annotations.csv", header=header)
    kw = {"annotations": str(sheet), "test_fraction": 0.0, "max_size": 285, "spacing_mm": 0.1}
    cache = run(root, tmp_path / "out", **kw)
    recs = by_name(cache)
    assert len(recs) == 5 and recs["P3_L_DM_CC"].labels["density"] == 3
    assert recs["P2_R_DM_CC"].labels["birads"] == 4 and recs["P2_R_DM_CC"].labels["cancer"] == 1
    meta = recs["P1_L_DM_CC"].meta
    scale = meta["scale"]
    assert math.isclose(scale, 285 / max(meta["native_shape"])) and scale < 1
    assert meta["spacing_mm"] == pytest.approx([0.1 / scale] * 2) and meta["spacing_from"] == "assumed"
    reason = skipped(tmp_path / "out")[f"{sheet} row 10 / P4_R_DM_MLO"]
    assert reason.startswith("column 'Pathology Classification / Follow-up': unreadable value 'Probably'")


def test_cdd_cesm_rows_that_contradict_their_name(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / SHEET, [
        row("P7_L_DM_CC", "Normal", Patient_ID=8),
        row("P7_L_DM_MLO", "Normal", Side="R"),
        row("P7_R_DM_CC", "Normal", Type="CESM"),  # contradicted: reported, not passed over
        row("P7_R_DM_MLO", "Normal", View="CC"),
        row("P8_L_DM_CC", "Normal", Patient_ID="", Side="", View="", Type=""),  # all from the name
        row("P8_L_DM_CC", "Benign"),  # a second row
        row("P8_L_DM_MLO", "Normal", density="X", birads="4$7"),
        row("P8_R_DM_CC", "Normal", Patient_ID="P8", density="-", birads=""),
        row("P8_R_CM_CC", "Normal", Type="CM", density=""),
        row("P8_R_DM_MLO.jpg", "Normal", Patient_ID="8.0", Side="RIGHT", Type=" dm ", View=" mlo "),
        row("", "Normal"),
    ])  # fmt: skip
    problems: list[tuple[str, str]] = []
    entries, unused, n_rows, passed_over = read_rows(sheet, False, problems)
    assert sorted(entries) == ["P8_L_DM_CC", "P8_R_DM_CC", "P8_R_DM_MLO"]
    assert (n_rows, passed_over) == (11, 1)
    e = entries["P8_L_DM_CC"]
    assert (e.patient, e.side, e.view, e.type, e.row) == ("P8", "L", "CC", "DM", 6)
    assert (entries["P8_R_DM_CC"].density, entries["P8_R_DM_CC"].birads) == (None, None)
    assert entries["P8_R_DM_MLO"].name == "P8_R_DM_MLO" and entries["P8_R_DM_MLO"].side == "R"
    assert unused == {"P7_L_DM_CC", "P7_L_DM_MLO", "P7_R_DM_CC", "P7_R_DM_MLO", "P8_L_DM_MLO", "P8_R_CM_CC"}
    assert problems == [
        (f"{sheet} row 2 / P7_L_DM_CC", "column 'Patient_ID': '8' contradicts the image name P7_L_DM_CC"),
        (f"{sheet} row 3 / P7_L_DM_MLO", "column 'Side': 'R' contradicts the image name P7_L_DM_MLO"),
        (f"{sheet} row 4 / P7_R_DM_CC", "column 'Type': 'CESM' contradicts the image name P7_R_DM_CC"),
        (f"{sheet} row 5 / P7_R_DM_MLO", "column 'View': 'CC' contradicts the image name P7_R_DM_MLO"),
        (f"{sheet} row 7 / P8_L_DM_CC", "a second row for image P8_L_DM_CC (first: row 6)"),
        (f"{sheet} row 8 / P8_L_DM_MLO", "column 'Breast density (ACR)': unreadable value 'X' (expected A-D, "
         "1-4); column 'BIRADS': unreadable value '4$7' (expected 0-6)"),
        (f"{sheet} row 12 / ?", "column 'Image_name': empty"),
    ]  # fmt: skip


def test_value_parsers() -> None:
    keys = [patient_key(t) for t in ("2", "2.0", "P2", "p 02", " x9 ", "")]
    assert keys == ["P2", "P2", "P2", "P2", "X9", None]
    assert [birads_of(t) for t in ("4$2", "3$2$2", "4a", "", "_", "0")] == [4, 3, 4, None, None, 0]
    for bad in ("7", "4$x", "BI"):
        with pytest.raises(ValueError):
            birads_of(bad)


def test_cdd_cesm_fail_stops_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "cdd"
    sheet = traps(root)
    with pytest.raises(PrepareError, match=re.escape(f"{sheet} row 10 / P4_R_DM_MLO: column '{PATHOLOGY}'")):
        run(root, tmp_path / "out", on_error="fail")
    assert not (tmp_path / "out" / "cache.json").exists()
    # a file that cannot be decoded stops the run naming it
    root2 = tmp_path / "cdd2"
    write_image(root2, "P1_L_DM_CC")
    bad = image_path(root2, "P3_L_DM_MLO")
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    write_sheet(root2 / SHEET, [ROWS[0], ROWS[7]])
    with pytest.raises(PrepareError, match=re.escape(str(bad))):
        run(root2, tmp_path / "out2", on_error="fail", test_fraction=0.0)
    assert not (tmp_path / "out2" / "cache.json").exists()


def test_cdd_cesm_missing_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cdd"
    write_image(root, "P1_L_DM_CC")
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="download folder not found"):
        run(tmp_path / "nowhere", out)
    sheet = root / SHEET
    with pytest.raises(PrepareError, match=re.escape(f"{sheet}: CDD-CESM annotation sheet not found")):
        run(root, out)
    header = [h for h in HEADER if h != "BIRADS"]
    write_sheet(sheet, [[v for h, v in zip(HEADER, ROWS[0], strict=True) if h != "BIRADS"]], header=header)
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['BIRADS'\]; the sheet has \['Image_name'"):
        run(root, out)
    write_sheet(sheet, [ROWS[0]])
    assert len(run(root, out, test_fraction=0.0)) == 1
    # the sheet as TCIA's link saves it, one folder down
    moved = root / "metadata" / "Radiology-manual-annotations.xlsx"
    moved.parent.mkdir()
    sheet.rename(moved)
    assert len(run(root, tmp_path / "out1", test_fraction=0.0)) == 1
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(PrepareError, match=r"needs openpyxl: pip install 'miram\[collections\]'"):
        run(root, tmp_path / "out2")


@pytest.mark.parametrize("seed", range(6))
def test_cdd_cesm_splits_by_patient_worst_pathology(seed: int) -> None:
    # a, b: a normal and a malignant film (worst: malignant); c-h: normal and benign (worst: benign)
    films = [
        Film(f"{p}{k}.jpg", f"{p}{k}", p, "train", labels={"pathology3": k * (2 if p < "c" else 1)})
        for p in "abcdefgh"
        for k in (0, 1)
    ]
    assign_splits(films, 0.25, 0.5, seed)
    split_of = {f.patient_id: f.split for f in films}
    assert all(split_of[f.patient_id] == f.split for f in films)
    assert sorted(split_of[p] for p in "ab") == ["test", "train"]
    assert sorted(split_of[p] for p in "cdefgh") == ["test"] * 3 + ["train"] + ["val"] * 2
    assert split_report(films)["test"] == {"patients": 4, "images": 8}
    assert all(f.pretrain == (f.split != "test") for f in films)


def test_cdd_cesm_builder_tree(tmp_path: Path) -> None:
    build_cdd_cesm_tree(tmp_path / "c", 2)
    cache = run(tmp_path / "c", tmp_path / "out", test_fraction=0.0)
    assert len(cache) == 8 and not skipped(tmp_path / "out")
    assert cache.info["join"]["subtracted_images_passed_over"] == 8
    benign = sorted(r.meta["image_name"] for r in cache.records if r.labels["pathology3"] == 1)
    assert benign == ["P2_R_DM_CC", "P2_R_DM_MLO"]
    assert sorted({r.labels["density"] for r in cache.records}) == [0, 1]
