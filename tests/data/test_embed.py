"""``prepare_embed`` on small EMBED trees: the file-to-finding join, labels by value, path resolution, the
licence notice, and every bad input (missing file, unlisted file, undecodable file, bad ROI, bad value,
missing table or column)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from trees_embed import (
    CLINICAL_COLUMNS,
    METADATA_COLUMNS,
    NAS,
    EmbedImage,
    build_embed_tree,
    finding,
    write_table,
    write_tree,
)

from miram.data.cache import Cache, CacheRecord, PrepareError
from miram.data.collections.embed import (
    LICENCE,
    Finding,
    breast_labels,
    norm_id,
    parse_boxes,
    prepare_embed,
    resolve_path,
)
from miram.data.splits import draw_splits

META = Path("tables") / "EMBED_OpenData_metadata.csv"
CLIN = Path("tables") / "EMBED_OpenData_clinical.csv"

A, B, C, D, E = "10000879", "20000001", "30000002", "40000003", "50000004"
ACC = {A: "6555526148046184", B: "7000000000000002", C: "8000000000000003", D: "9000000000000004",
       E: "9100000000000005"}  # fmt: skip


def image(empi: str, n: int, side: str, view: str, **kw: Any) -> EmbedImage:
    return EmbedImage(empi, ACC[empi], f"1.2.826.0.1.3680043.8.498.{empi}.{n}", side, view,
                      study=f"1.2.840.113619.2.{empi}", **kw)  # fmt: skip


IMAGES = {
    # the metadata writes A's exam id as a float; the clinical table as an integer
    "A_LCC": image(A, 1, "L", "CC", acc_in_metadata=f"{ACC[A]}.0"),
    "A_LMLO": image(A, 2, "L", "MLO", roi="((100, 50, 200, 120),)", match_level="[['1']]"),
    "A_RCC": image(A, 3, "R", "CC", imager_spacing=None),
    "A_cview": image(A, 4, "L", "CC", kind="cview", case=1),
    "A_spot": image(A, 5, "R", "CC", spot_mag="1.0", case=1),
    "B_LCC": image(B, 1, "L", "CC", case=1),
    "B_RMLO": image(B, 2, "R", "MLO", case=1, path_style="aws"),
    "C_LCC": image(C, 1, "L", "CC", write=False),  # listed, never downloaded
    "C_LMLO": image(C, 2, "L", "MLO"),
    "C_RCC": image(C, 3, "R", "CC", write=False),  # pydicom's 12-bit JPEG Extended file lands here
    "D_RCC": image(D, 1, "R", "CC"),  # its exam has no clinical row
    "D_LCC": image(D, 2, "L", "CC", roi="((12, 40, 8),)"),  # three numbers: not a box
}
FINDINGS = [
    finding(A, ACC[A], "L", "S", "3", 1, path_severity="0"),  # invasive cancer, left
    finding(A, ACC[A], "L", "A", "3", 2),
    finding(A, ACC[A], "R", "B", "3", 3, path_severity="4.0"),  # benign biopsy, right
    finding(B, ACC[B], "B", "A", "5", 1),  # bilateral call-back; tissueden 5: no ACR density
    finding(B, ACC[B], "L", "B", "5", 2),
    finding(B, ACC[B], "R", "N", "5", 3),
    finding(C, ACC[C], "B", "S", "1", 1, path_severity="1", bside="L"),  # DCIS in the left breast only
    finding(E, ACC[E], "L", "N", "7", 1),  # no image of this exam; tissueden 7 does not exist
]
LOSSY = Path(str(get_testdata_file("JPEG-lossy.dcm")))  # 12-bit JPEG Extended: no decoder here
EXTRA = Path("images/cohort_1") / D / "1.2.840.113619.2.40000003" / "1.2.3.999.dcm"


def build_main(root: Path) -> Path:
    write_tree(root, list(IMAGES.values()), FINDINGS)
    (root / IMAGES["C_RCC"].file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(LOSSY, root / IMAGES["C_RCC"].file)
    extra = root / EXTRA
    extra.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / IMAGES["D_RCC"].file, extra)
    return root


def prepare(root: Path, out: Path, **kw: Any) -> Path:
    return prepare_embed(str(root), str(out), workers=0, progress=False, **kw)


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["input"]: row["reason"] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Cache]:
    root = build_main(tmp_path_factory.mktemp("embed") / "download")
    out = root.parent / "cache"
    cache = Cache(prepare(root, out, max_size=400, val_fraction=0.0, test_fraction=0.5, seed=3))
    return root, out, cache


def by_file(cache: Cache) -> dict[str, CacheRecord]:
    names = {im.file: name for name, im in IMAGES.items()}
    root = Path(cache.records[0].source).parents[4]
    return {names[Path(r.source).relative_to(root).as_posix()]: r for r in cache.records}


def test_records_and_labels(main: tuple[Path, Path, Cache]) -> None:
    _, _, cache = main
    rec = by_file(cache)
    # 2D full-field films whose file decodes: no C-view, no spot view, not C's missing / JPEG-lossy files
    assert sorted(rec) == ["A_LCC", "A_LMLO", "A_RCC", "B_LCC", "B_RMLO", "C_LMLO", "D_RCC"]
    lab = {k: r.labels for k, r in rec.items()}
    # left A: S (4) over A (0); path_severity 0 -> cancer; density C (tissueden 3, exam-wide)
    assert lab["A_LCC"] == {"density": 2, "birads": 4, "cancer": 1, "pathology": 1, "path_severity": 0,
                            "laterality": 0, "view": 0}  # fmt: skip
    assert lab["A_LMLO"] == {**lab["A_LCC"], "view": 1}
    # right A: only its own benign finding (the left cancer must not leak across the join)
    assert lab["A_RCC"] == {"density": 2, "birads": 2, "cancer": 0, "pathology": 0, "path_severity": 4,
                            "laterality": 1, "view": 0}  # fmt: skip
    # B: the bilateral A row reaches both breasts and outranks B (2) and N (1); tissueden 5 -> unknown
    assert lab["B_LCC"] == {"density": None, "birads": 0, "cancer": None, "pathology": None,
                            "path_severity": None, "laterality": 0, "view": 0}  # fmt: skip
    assert lab["B_RMLO"]["birads"] == 0 and lab["B_RMLO"]["laterality"] == 1 and lab["B_RMLO"]["view"] == 1
    # C: a bilateral finding whose pathology (DCIS) bside puts in the left breast
    assert lab["C_LMLO"] == {"density": 0, "birads": 4, "cancer": 1, "pathology": 1, "path_severity": 1,
                             "laterality": 0, "view": 1}  # fmt: skip
    # D: no clinical row: kept with unknown labels
    assert lab["D_RCC"] == {"density": None, "birads": None, "cancer": None, "pathology": None,
                            "path_severity": None, "laterality": 1, "view": 0}  # fmt: skip
    assert {r.patient_id for r in rec.values()} == {A, B, C, D}
    meta = rec["A_LCC"].meta
    assert (meta["empi_anon"], meta["acc_anon"], meta["laterality"], meta["view"]) == (A, ACC[A], "L", "CC")
    assert meta["sop_instance_uid"] == IMAGES["A_LCC"].sop and meta["image_type"] == "2D"
    assert meta["anon_dicom_path"] == f"{NAS}/{IMAGES['A_LCC'].rel}"
    assert cache.info["labels"]["path_severity"]["classes"][0] == "invasive cancer"


def test_pixels_spacing_and_boxes(main: tuple[Path, Path, Cache]) -> None:
    _, _, cache = main
    rec = by_file(cache)
    lmlo = rec["A_LMLO"]
    index = cache.records.index(lmlo)
    h, w = lmlo.meta["native_shape"]
    scale = lmlo.meta["scale"]
    assert max(cache.image(index).shape) == 400 and math.isclose(scale, 400 / max(h, w), rel_tol=0.01)
    assert lmlo.meta["spacing_from"] == "ImagerPixelSpacing"
    assert lmlo.meta["spacing_mm"] == pytest.approx([0.07 / scale, 0.07 / scale])
    box = [math.floor(100 * scale), math.floor(50 * scale), math.ceil(200 * scale), math.ceil(120 * scale)]
    assert lmlo.meta["findings"] == [{"box": box, "match_level": 1}]
    assert rec["A_LCC"].meta["findings"] == []
    assert rec["A_RCC"].meta["spacing_from"] is None  # no spacing tag, none assumed


def test_splits_by_patient_stratified(main: tuple[Path, Path, Cache]) -> None:
    _, _, cache = main
    split = {r.patient_id: r.split for r in cache.records}
    assert all(r.split == split[r.patient_id] for r in cache.records)
    assert all(r.pretrain == (r.split != "test") for r in cache.records)
    strata = {A: "cancer", B: "", C: "cancer", D: ""}
    assert split == draw_splits(strata, 0.0, 0.5, 3)
    assert sorted(strata[p] for p, s in split.items() if s == "test") == ["", "cancer"]


def test_problems_and_join_report(main: tuple[Path, Path, Cache]) -> None:
    root, out, cache = main
    meta, clin = root / META, root / CLIN
    skips = skipped(out)
    c_lcc = IMAGES["C_LCC"]
    missing = f"{meta} row 9 / {c_lcc.sop}.dcm"
    assert skips[missing] == f"no image file {root / c_lcc.rel} (nor {root / c_lcc.file})"
    assert skips[str(root / EXTRA)] == f"{root / EXTRA}: not in {meta}"
    assert skips[f"{meta} row 13 / {IMAGES['D_LCC'].sop}.dcm"].startswith(
        "column ROI_coords: unreadable value '((12, 40, 8),)' (3 numbers"
    )
    assert skips[f"{clin} row 9"] == "column tissueden: unreadable value '7' (ignored; the exam is kept)"
    lossy = skips[str(root / IMAGES["C_RCC"].file)]
    assert "JPEG Extended" in lossy and "pylibjpeg-libjpeg" in lossy
    assert len(skips) == 5
    assert cache.info["join"] == {
        "join": cache.info["join"]["join"],
        "rows": 12,
        "images": 12,
        "rows_without_image": 1,
        "images_without_row": 1,
        "excluded": {"cview": 1, "spot_mag": 1},
        "kept": 8,
        "rows_without_clinical": 1,
        "clinical_rows": 8,
        "clinical_rows_without_image": 1,
    }
    assert cache.info["licence"] == LICENCE


def test_fail_stops_before_decoding(main: tuple[Path, Path, Cache], tmp_path: Path) -> None:
    root, _, _ = main
    with pytest.raises(PrepareError, match=r"EMBED_OpenData_clinical\.csv row 9: column tissueden"):
        prepare(root, tmp_path / "c", on_error="fail")
    assert not (tmp_path / "c" / "cache.json").exists() and not (tmp_path / "c" / "records").exists()


def test_undecodable_file_under_fail(tmp_path: Path) -> None:
    root = build_embed_tree(tmp_path / "d", 1)
    victim = next((root / "images").rglob("*.dcm"))
    shutil.copy(LOSSY, victim)
    with pytest.raises(PrepareError, match="JPEG Extended") as info:
        prepare(root, tmp_path / "c", on_error="fail")
    assert str(victim) in str(info.value) and not (tmp_path / "c" / "cache.json").exists()


def test_licence_notice_and_builder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_embed_tree(tmp_path / "d", 1)
    cache = Cache(prepare(root, tmp_path / "c"))
    err = capsys.readouterr().err
    assert "clause 5" in err and "without specific prior written permission" in err
    info = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert info["licence"] == {
        "name": "EMBED Open Data licence (non-commercial, registration)",
        "weights_restricted": True,
        "notice": LICENCE["notice"],
    }
    assert "models, model weights or embedding spaces" in info["licence"]["notice"]
    # builder pattern 0: a negative screening exam, one finding row without a side -> both breasts
    assert len(cache) == 4 and info["num_skipped"] == 0
    assert all(r.labels["birads"] == 1 and r.labels["density"] == 1 and r.labels["cancer"] is None
               for r in cache.records)  # fmt: skip
    assert sorted((r.meta["laterality"], r.meta["view"]) for r in cache.records) == [
        ("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]  # fmt: skip


def test_include_cview_and_spot_mag(tmp_path: Path) -> None:
    images = [image(A, 1, "L", "CC"), image(A, 2, "L", "CC", kind="cview", case=1),
              image(A, 3, "R", "CC", spot_mag="1", case=1)]  # fmt: skip
    root = write_tree(tmp_path / "d", images, FINDINGS[:3])
    default = Cache(prepare(root, tmp_path / "c0"))
    assert len(default) == 1 and default.info["join"]["excluded"] == {"cview": 1, "spot_mag": 1}
    assert skipped(tmp_path / "c0") == {}  # excluded files are listed rows, not unlisted files
    both = Cache(prepare(root, tmp_path / "c1", include_cview=True, include_spot_mag=True))
    kinds = sorted((r.meta["image_type"], r.meta["spot_mag"], r.labels["birads"]) for r in both.records)
    assert kinds == [("2D", False, 4), ("2D", True, 2), ("cview", False, 4)]


def test_path_prefix(tmp_path: Path) -> None:
    root = build_embed_tree(tmp_path / "d", 1)
    for patient in list((root / "images" / "cohort_1").iterdir()):  # the user keeps <empi>/... at the root
        shutil.move(patient, root / patient.name)
    shutil.rmtree(root / "images")
    with pytest.raises(PrepareError, match="no film to prepare"):
        prepare(root, tmp_path / "c0")
    cache = Cache(prepare(root, tmp_path / "c1", path_prefix=f"{NAS}/cohort_1/"))
    assert len(cache) == 4 and skipped(tmp_path / "c1") == {}
    with pytest.raises(PrepareError, match="does not start with path_prefix '/elsewhere'"):
        prepare(root, tmp_path / "c2", path_prefix="/elsewhere", on_error="fail")


def test_missing_tables_and_columns(tmp_path: Path) -> None:
    root = build_embed_tree(tmp_path / "d", 1)
    with pytest.raises(PrepareError, match="EMBED root folder not found"):
        prepare(tmp_path / "nowhere", tmp_path / "c")
    clinical = (root / CLIN).read_bytes()
    (root / CLIN).unlink()
    with pytest.raises(PrepareError, match=r"no EMBED_OpenData_clinical\.csv .*--clinical"):
        prepare(root, tmp_path / "c")
    # the other shipped place, and an explicit path
    (root / "EMBED_OpenData_clinical.csv").write_bytes(clinical)
    assert len(Cache(prepare(root, tmp_path / "c1"))) == 4
    with pytest.raises(PrepareError, match="elsewhere.csv: clinical table not found"):
        prepare(root, tmp_path / "c2", clinical=str(tmp_path / "elsewhere.csv"))
    with open(root / META, newline="") as f:
        rows = list(csv.DictReader(f))
    write_table(root / META, [c for c in METADATA_COLUMNS if c != "ImageLateralityFinal"], rows)
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['ImageLateralityFinal'\]; the table has .*"
                       r"'FinalImageType'") as info:  # fmt: skip
        prepare(root, tmp_path / "c3")
    assert str(root / META) in str(info.value)
    write_table(root / META, METADATA_COLUMNS, rows)
    write_table(root / "EMBED_OpenData_clinical.csv", [c for c in CLINICAL_COLUMNS if c != "path_severity"],
                [finding(A, ACC[A], "L", "N")])  # fmt: skip
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['path_severity'\]"):
        prepare(root, tmp_path / "c4")
    assert not any((tmp_path / c / "cache.json").exists() for c in ("c", "c2", "c3", "c4"))


def test_tolerated_headers_and_values(tmp_path: Path) -> None:
    root = build_embed_tree(tmp_path / "d", 1)
    for path in (root / META, root / CLIN):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        rows[0] = [f" {c.upper()} " for c in rows[0]]  # case and stray spaces in the header
        for row in rows[1:]:
            row[:] = [f" {v} " if v else "nan" for v in row]  # stray spaces, pandas' nan
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    cache = Cache(prepare(root, tmp_path / "c"))
    assert len(cache) == 4 and all(
        r.labels["birads"] == 1 and r.labels["density"] == 1 for r in cache.records
    )
    assert all(r.meta["findings"] == [] for r in cache.records)


def test_parse_boxes() -> None:
    assert parse_boxes("((1365, 272, 1610, 508),)") == [[1365, 272, 1610, 508]]
    assert parse_boxes("[[1450, 2203, 1670, 2400]]") == [[1450, 2203, 1670, 2400]]
    assert parse_boxes("[[[2, 0, 666, 374]]]") == [[2, 0, 666, 374]]
    assert parse_boxes("((992, 202, 1276, 647), (2098, 302, 2647, 1089))") == [
        [992, 202, 1276, 647], [2098, 302, 2647, 1089]]  # fmt: skip
    assert parse_boxes("()") == parse_boxes("") == parse_boxes("nan") == parse_boxes("[]") == []
    for bad in ("((1, 2, 3),)", "((1, 2, 3, x),)", "[[5, 5, 1, 9]]", "[[-1, 0, 3, 4]]", "__import__('os')",
                "((1, 2, 3, True),)", "[[1, 2, 3, inf]]"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_boxes(bad)


def test_norm_id_and_resolve_path(tmp_path: Path) -> None:
    assert norm_id("6555526148046184.0") == norm_id(" 6555526148046184 ") == "6555526148046184"
    assert norm_id("8.010398258948596e+15") == "8010398258948596"
    assert norm_id("nan") == "" and norm_id("AB12") == "AB12" and norm_id("12.5") == "12.5"
    rel = Path("cohort_2/1/2/3.dcm")
    for written in (
        f"{NAS}/cohort_2/1/2/3.dcm",
        "./images/cohort_2/1/2/3.dcm",
        r"D:\embed\cohort_2\1\2\3.dcm",
    ):
        assert resolve_path(written, tmp_path, None) == ([tmp_path / rel, tmp_path / "images" / rel], None)
    assert resolve_path("/srv/x/1/2/3.dcm", tmp_path, "/srv/x") == ([tmp_path / "1/2/3.dcm"], None)
    assert resolve_path("/srv/x/1/2/3.dcm", tmp_path, None)[1] is not None


def test_birads_order() -> None:
    def labels(*asses: str) -> dict[str, Any]:
        codes = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
        return breast_labels([Finding(2, "L", "L", codes[a], None, None, "") for a in asses], "L")

    # N < B < P < A < S < M < K
    assert [labels(*pair)["birads"] for pair in (("N", "B"), ("B", "P"), ("P", "A"), ("A", "S"), ("S", "M"),
            ("M", "K"), ("A", "N"))] == [2, 3, 0, 4, 5, 6, 0]  # fmt: skip
    # severity 6 (non-breast cancer) alone: biopsied without breast cancer, pathology unknown
    six = breast_labels([Finding(2, "R", "R", 4, None, 6, "")], "R")
    assert (six["cancer"], six["pathology"], six["path_severity"]) == (0, None, 6)
    assert breast_labels([Finding(2, "R", "R", 4, None, 6, "")], "L")["birads"] is None


def test_pathology_side() -> None:
    # a bilateral finding whose pathology result bside puts in the left breast: BI-RADS for both, cancer left
    dcis = [Finding(2, "B", "L", 4, None, 1, ""), Finding(3, "R", "R", 2, None, None, "")]
    assert breast_labels(dcis, "L") == {"density": None, "birads": 4, "cancer": 1, "pathology": 1,
                                        "path_severity": 1}  # fmt: skip
    assert breast_labels(dcis, "R") == {"density": None, "birads": 4, "cancer": None, "pathology": None,
                                        "path_severity": None}  # fmt: skip
    # density is the exam's, from a row of either side; the densest where rows differ
    rows = [Finding(2, "L", "L", 1, 1, None, ""), Finding(3, "R", "R", 1, 2, None, "")]
    assert breast_labels(rows, "L")["density"] == breast_labels(rows, "R")["density"] == 2
