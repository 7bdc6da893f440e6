"""``miram prepare vindr-mammo`` on small trees with PhysioNet's exact names, columns and value spellings."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from trees_vindr import VindrImage, build_vindr_tree, write_vindr

from miram.data.cache import Cache, PrepareError
from miram.data.collections.vindr import FINDINGS, parse_categories, prepare_vindr

SPACING = 0.07
MASS, CALC = FINDINGS.index("Mass"), FINDINGS.index("Suspicious Calcification")
FOCAL, DISTORTION = FINDINGS.index("Focal Asymmetry"), FINDINGS.index("Architectural Distortion")


def traps() -> list[VindrImage]:
    """Two training studies of the same highest BI-RADS (so val_fraction 0.5 sends one to val), one test
    study with a row whose image is missing, an image with no row, one ``.dcm`` file."""
    return [
        VindrImage(
            "st-a",
            "a-lcc",
            "lcc",
            "BI-RADS 4",
            "DENSITY C",
            findings=[
                ("['Mass']", "BI-RADS 4", (40, 120, 100, 200)),
                ("['Mass', 'Suspicious Calcification']", "BI-RADS 4", (60.5, 300, 90, 340.25)),
            ],
        ),  # fmt: skip
        VindrImage(
            "st-a",
            "a-lmlo",
            "lmlo",
            " BI-RADS 3",
            "DENSITY C ",
            findings=[("Architectural Distortion", "BI-RADS 3", (30, 50, 70, 90))],
        ),  # fmt: skip
        VindrImage("st-a", "a-rcc", "rcc", "BI-RADS 1", "DENSITY C"),
        VindrImage("st-b", "b-rmlo", "rmlo", "BI-RADS 2", "DENSITY B", suffix=".dcm"),
        VindrImage(
            "st-b",
            "b-lcc",
            "lcc",
            "4",
            "DENSITY B",
            findings=[("['Focal Asymmetry']", "BI-RADS 4", (10, 10, 50, 60)), ("[]", "", None)],
        ),  # fmt: skip
        VindrImage(
            "st-c",
            "c-lcc",
            "lcc",
            "BI-RADS 5",
            "DENSITY D",
            "test",
            case=1,
            findings=[("['Suspicious Calcification']", "BI-RADS 5", (100, 200, 140, 260))],
        ),  # fmt: skip
        VindrImage("st-c", "c-rcc", "rcc", "BI-RADS 1", "DENSITY D", "test", file=False),
        VindrImage("st-b", "zz-extra", "rcc", row=False),
    ]


def skipped(out: Path) -> list[tuple[str, str]]:
    with open(out / "skipped.csv") as f:
        return [(r["input"], r["reason"]) for r in csv.DictReader(f)]


def by_image(cache: Cache) -> dict[str, object]:
    return {r.meta["image_id"]: r for r in cache.records}


def test_vindr_labels_splits_spacing_boxes(tmp_path: Path) -> None:
    root = write_vindr(tmp_path / "vindr-mammo", traps(), spacing=SPACING)
    out = tmp_path / "cache"
    prepare_vindr(str(root), str(out), max_size=277, val_fraction=0.5, workers=0, progress=False)
    cache = Cache(out)
    recs = {r.meta["image_id"]: r for r in cache.records}
    assert sorted(recs) == ["a-lcc", "a-lmlo", "a-rcc", "b-lcc", "b-rmlo", "c-lcc"]

    # the official test study stays test and out of pre-training; val is one whole training study
    assert (recs["c-lcc"].split, recs["c-lcc"].pretrain) == ("test", False)
    split_of = {r.patient_id: set() for r in cache.records}
    for r in cache.records:
        split_of[r.patient_id].add(r.split)
        assert r.patient_id == r.meta["study_id"]
    assert all(len(s) == 1 for s in split_of.values())
    assert sorted(next(iter(split_of[s])) for s in ("st-a", "st-b")) == ["train", "val"]
    assert all(r.pretrain for r in cache.records if r.split != "test")

    labels = {k: r.labels for k, r in recs.items()}
    assert labels["a-lcc"] == {"density": 2, "birads": 4, "laterality": 0, "view": 0,
                               "findings": sorted([MASS, CALC]), "suspicious": 1}  # fmt: skip
    assert labels["a-lmlo"] == {"density": 2, "birads": 3, "laterality": 0, "view": 1,
                                "findings": [DISTORTION], "suspicious": 0}  # fmt: skip
    assert labels["a-rcc"] == {"density": 2, "birads": 1, "laterality": 1, "view": 0, "findings": [],
                               "suspicious": 0}  # fmt: skip
    assert labels["b-rmlo"]["density"] == 1 and labels["b-rmlo"]["birads"] == 2
    assert labels["b-lcc"]["findings"] == [FOCAL] and labels["b-lcc"]["suspicious"] == 1
    assert labels["c-lcc"] == {"density": 3, "birads": 5, "laterality": 0, "view": 0, "findings": [CALC],
                               "suspicious": 1}  # fmt: skip
    assert (recs["a-rcc"].meta["laterality"], recs["a-lmlo"].meta["view"]) == ("R", "MLO")

    # 554 x 358 native rows halved by max_size 277: spacing doubles, boxes follow (no flip asked)
    a = recs["a-lcc"]
    scale = a.meta["scale"]
    assert a.meta["native_shape"][0] == 554 and scale == pytest.approx(0.5)
    assert a.meta["spacing_mm"] == pytest.approx([SPACING / scale] * 2)
    assert a.meta["spacing_from"] == "PixelSpacing"
    assert cache.image(list(cache.records).index(a)).shape[0] == 277
    assert a.meta["findings"] == [
        {"box": [60, 20, 100, 50], "categories": ["Mass"], "birads": 4},
        {"box": [150, 30, 171, 45],  # ymin 300, xmin 60.5, ymax 340.25, xmax 90: outward to whole pixels
         "categories": ["Mass", "Suspicious Calcification"], "birads": 4},
    ]  # fmt: skip
    assert recs["a-rcc"].meta["findings"] == []

    assert sorted(skipped(out)) == sorted([
        (f"{root / 'breast-level_annotations.csv'} row 8 / c-rcc",
         f"no image file {root / 'images' / 'st-c' / 'c-rcc.dicom'}"),
        (str(root / "images" / "st-b" / "zz-extra.dicom"), f"not in {root / 'breast-level_annotations.csv'}"),
    ])  # fmt: skip
    info = json.loads((out / "cache.json").read_text())
    assert {k: info["join"][k] for k in ("rows", "images", "rows_without_image", "images_without_row")} == {
        "rows": 7, "images": 7, "rows_without_image": 1, "images_without_row": 1}  # fmt: skip
    assert info["join"]["finding_rows"] == 9 and info["join"]["images_without_finding_row"] == 0
    assert info["licence"]["weights_restricted"] is False and "Credentialed" in info["licence"]["name"]
    assert info["labels"]["findings"] == {"kind": "multilabel", "classes": list(FINDINGS)}


def test_vindr_flip_moves_boxes(tmp_path: Path) -> None:
    images = [VindrImage("st-a", "a-lcc", "lcc", "BI-RADS 4", "DENSITY C",
                         findings=[("['Mass']", "BI-RADS 4", (40, 120, 100, 200))])]  # fmt: skip
    root = write_vindr(tmp_path / "v", images)
    both = {}
    for side in ("left", "right"):
        prepare_vindr(str(root), str(tmp_path / side), flip_to=side, workers=0, progress=False)
        both[side] = Cache(tmp_path / side).records[0].meta
    flipped = next(m for m in both.values() if m["flipped"])
    kept = next(m for m in both.values() if not m["flipped"])
    width = flipped["native_shape"][1]
    assert kept["findings"][0]["box"] == [120, 40, 200, 100]
    assert flipped["findings"][0]["box"] == [120, width - 100, 200, width - 40]


def test_parse_categories() -> None:
    assert parse_categories("['Mass', 'Suspicious Calcification']") == ["Mass", "Suspicious Calcification"]
    assert parse_categories("['No Finding']") == parse_categories("[]") == parse_categories("  ") == []
    assert parse_categories("Mass") == ["Mass"]
    assert parse_categories("global_asymmetry, mass") == ["Global Asymmetry", "Mass"]
    assert parse_categories("('Mass', 'Mass')") == ["Mass"]
    for bad in ("['Mass'", "['Tumour']", "[1, 2]", "{'Mass': 1}"):
        with pytest.raises(ValueError):
            parse_categories(bad)


def test_vindr_bad_rows_and_undecodable_file(tmp_path: Path) -> None:
    images = [
        VindrImage("st-a", "ok", "lcc"),
        VindrImage("st-a", "bad-cat", "lmlo", findings=[("['Mass'", "BI-RADS 4", (1, 2, 3, 4))]),
        VindrImage("st-b", "bad-density", "rcc", density="DENSITY X"),
        VindrImage("st-b", "bad-box", "rmlo", findings=[("['Mass']", "BI-RADS 4", (10, 20, 30, ""))]),
        VindrImage("st-c", "lossy", "lcc", file=False),
        VindrImage("st-d", "d-train", "lcc", split="training"),
        VindrImage("st-d", "d-test", "rcc", split="test"),
    ]
    root = write_vindr(tmp_path / "v", images)
    lossy = root / "images" / "st-c" / "lossy.dicom"
    lossy.parent.mkdir()
    shutil.copy(pydicom_file("JPEG-lossy.dcm"), lossy)
    breast, finding = root / "breast-level_annotations.csv", root / "finding_annotations.csv"

    with pytest.raises(
        PrepareError, match=re.escape(f"{breast} row 4 / bad-density: breast_density 'DENSITY X'")
    ):
        prepare_vindr(str(root), str(tmp_path / "fail"), on_error="fail", workers=0, progress=False)
    assert not (tmp_path / "fail" / "cache.json").exists()

    out = tmp_path / "skip"
    prepare_vindr(str(root), str(out), workers=0, progress=False)
    cache = Cache(out)
    recs = {r.meta["image_id"]: r for r in cache.records}
    assert sorted(recs) == ["d-test", "d-train", "ok"]
    # a study with rows in both official splits goes to test whole
    assert {(recs[k].split, recs[k].pretrain) for k in ("d-test", "d-train")} == {("test", False)}
    assert json.loads((out / "cache.json").read_text())["studies_in_both_splits"] == ["st-d"]
    reasons = dict(skipped(out))
    assert reasons.pop(f"{finding} row 3 / bad-cat").startswith("finding_categories \"['Mass'\" unreadable")
    assert reasons.pop(f"{finding} row 5 / bad-box") == (
        "box xmin,ymin,xmax,ymax ['10', '20', '30', ''] unreadable (['ymax'] empty)"
    )
    assert reasons.pop(f"{breast} row 4 / bad-density").startswith("breast_density 'DENSITY X' unreadable")
    assert "JPEG Extended" in reasons.pop(str(lossy))
    assert reasons == {}


def test_vindr_undecodable_file_fails_naming_it(tmp_path: Path) -> None:
    root = write_vindr(tmp_path / "v", [VindrImage("st-a", "ok", "lcc"), VindrImage("st-a", "lossy", "rcc")])
    lossy = root / "images" / "st-a" / "lossy.dicom"
    shutil.copy(pydicom_file("JPEG-lossy.dcm"), lossy)
    with pytest.raises(PrepareError, match="decoder") as e:
        prepare_vindr(str(root), str(tmp_path / "out"), on_error="fail", workers=0, progress=False)
    assert str(lossy) in str(e.value)
    assert not (tmp_path / "out" / "cache.json").exists()


def test_vindr_missing_inputs(tmp_path: Path) -> None:
    root = write_vindr(tmp_path / "v", [VindrImage("st-a", "ok", "lcc")])
    out = str(tmp_path / "out")
    with pytest.raises(PrepareError, match="not found"):
        prepare_vindr(str(tmp_path / "nowhere"), out, workers=0, progress=False)
    finding = root / "finding_annotations.csv"
    text = finding.read_text()
    finding.unlink()
    with pytest.raises(PrepareError, match=re.escape(f"{finding}: finding annotations not found")):
        prepare_vindr(str(root), out, workers=0, progress=False)
    finding.write_text(text)
    breast = root / "breast-level_annotations.csv"
    breast.write_text(breast.read_text().replace("breast_density", "density"))
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['breast_density'\]; it has .*'density'"):
        prepare_vindr(str(root), out, workers=0, progress=False)
    assert not (tmp_path / "out" / "cache.json").exists()


def test_vindr_tolerates_column_case_and_builder(tmp_path: Path) -> None:
    root = build_vindr_tree(tmp_path / "v", n_patients=2, test_every=2)
    breast = root / "breast-level_annotations.csv"
    header, rest = breast.read_text().split("\n", 1)
    breast.write_text("\ufeff" + " Study_ID ," + header.split(",", 1)[1].upper() + "\n" + rest)
    out = tmp_path / "out"
    prepare_vindr(str(root), str(out), workers=0, progress=False)
    cache = Cache(out)
    assert len(cache.records) == 8
    assert {r.split for r in cache.records if r.patient_id.startswith("0001")} == {"test"}
    assert {r.labels["density"] for r in cache.records} == {0, 1}
    assert sum(len(r.meta["findings"]) for r in cache.records) == 0  # BI-RADS 1 and 2: no Mass box


def pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None
    return str(path)
