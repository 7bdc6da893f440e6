"""``miram prepare inbreast`` on small folders with the release's names: ';' CSV, file ids, contours."""

from __future__ import annotations

import csv
import json
import math
import plistlib
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from trees_inbreast import HEADER, SPACING, InbreastImage, build_inbreast_tree, write_csv, write_inbreast

from miram.data.cache import Cache, CacheRecord, PrepareError
from miram.data.collections.inbreast import LESIONS, assign_splits, file_id, prepare_inbreast, read_contours
from miram.data.films import Film
from miram.data.splits import split_report

MASS = [(100.0, 200.0), (150.0, 215.5), (130.0, 260.0), (101.5, 230.0)]  # x, y: box y 200–260, x 100–150
CALC = [(50.4, 300.6)]  # one point: a single calcification
LOSSY = "51048738_3f22cdda8da215e3_MG_R_CC_ANON.dcm"


def traps() -> list[InbreastImage]:
    """8 files, 5 usable, the release's traps: a `4a` BI-RADS, a file id written `20586934.0`, lower case `l`,
    a view written `ML`, images without contours, a contour file and a row without an image, an image
    without a row, an unreadable ACR, an undecodable file."""
    return [
        InbreastImage(
            "20586908",
            "6c613a14b80a8591",
            "R",
            "CC",
            acr=3,
            birads="4a",
            rois=[("Mass", MASS), ("Calcification", CALC)],
        ),  # fmt: skip
        InbreastImage(
            "20586934",
            "6c613a14b80a8591",
            "R",
            "MLO",
            acr=" 3 ",
            birads="4A ",
            row={"File Name": "20586934.0"},
        ),  # fmt: skip
        InbreastImage("22678622", "61b13c59bcba149e", "L", "CC", acr=1, birads="1", case=1),
        InbreastImage(
            "22678694",
            "61b13c59bcba149e",
            "L",
            "MLO",
            acr=2,
            birads="2",
            case=1,
            row={"Laterality": "l", "View": "ML"},
        ),  # fmt: skip
        InbreastImage(
            "24055445",
            "ac3185e18ffdc7b6",
            "L",
            "CC",
            acr=4,
            birads="5",
            rois=[
                ("Cluster", MASS),
                ("Spiculated region", [(10, 20), (30, 40)]),
                ("Point 1", CALC),
                ("Assymetry", [(200, 100), (250, 150)]),
            ],
        ),  # fmt: skip
        InbreastImage("30011484", "349323117bf0fd93", "R", "CC", row=None),  # an image without a row
        InbreastImage("51048738", "3f22cdda8da215e3", "R", "CC", birads="3", file=False),  # the lossy file
        InbreastImage("50997461", "97ec8cadfca70d32", "R", "MLO", file=False),  # a row without an image
        InbreastImage("99999999", "97ec8cadfca70d32", "R", "CC", file=False, row=None, rois=[("Mass", MASS)]),
        InbreastImage("53581379", "b231a8ba4dd4214f", "L", "CC", acr="dense"),  # an unreadable row
    ]


def build(root: Path, images: list[InbreastImage] | None = None) -> Path:
    table = write_inbreast(root, traps() if images is None else images)
    shutil.copy(get_testdata_file("JPEG-lossy.dcm"), root / "AllDICOMs" / LOSSY)
    return table


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {r["input"]: r["reason"] for r in csv.DictReader(f)}


def run(root: Path, out: Path, **kw: object) -> Cache:
    kw = {"workers": 0, "progress": False, **kw}
    return Cache(prepare_inbreast(str(root), str(out), **kw))  # type: ignore[arg-type]


def records(cache: Cache) -> dict[str, CacheRecord]:
    return {r.meta["file_id"]: r for r in cache.records}


def test_inbreast_join_labels_contours_splits(tmp_path: Path) -> None:
    root = tmp_path / "INbreast Release 1.0"
    table = build(root)
    out = tmp_path / "cache"
    cache = run(root, out, val_fraction=0.0, test_fraction=0.5)
    recs = records(cache)
    assert sorted(recs) == ["20586908", "20586934", "22678622", "22678694", "24055445"]

    cc = recs["20586908"]
    assert cc.labels == {"density": 2, "birads": 4, "suspicious": 1, "laterality": 1, "view": 0,
                         "lesions": [LESIONS.index("mass"), LESIONS.index("calcification")]}  # fmt: skip
    assert cc.meta["birads"] == "4a" and cc.meta["acr"] == "3" and cc.meta["age"] is None
    assert (cc.patient_id, cc.meta["patient_from"]) == ("6c613a14b80a8591", "file name hash")
    # contour boxes [y0, x0, y1, x1] in native pixels (no downscale); one point -> a one-pixel box
    assert cc.meta["findings"] == [{"box": [200, 100, 260, 150], "name": "mass"},
                                   {"box": [300, 50, 302, 52], "name": "calcification"}]  # fmt: skip
    assert cc.meta["spacing_mm"] == pytest.approx([SPACING, SPACING])
    # "20586934.0", "4A ", " 3 ": the same patient, no contour file -> no lesions, no findings
    mlo = recs["20586934"]
    assert mlo.labels == {
        "density": 2,
        "birads": 4,
        "suspicious": 1,
        "laterality": 1,
        "view": 1,
        "lesions": [],
    }
    assert mlo.meta["findings"] == [] and mlo.meta["xml"] is None and mlo.patient_id == cc.patient_id
    # "l" and "ML"
    low = recs["22678694"]
    assert low.labels == {
        "density": 1,
        "birads": 2,
        "suspicious": 0,
        "laterality": 0,
        "view": 1,
        "lesions": [],
    }
    assert (low.meta["laterality"], low.meta["view"]) == ("L", "MLO")
    assert recs["22678622"].labels["suspicious"] == 0 and recs["22678622"].labels["density"] == 0
    many = recs["24055445"]
    assert many.labels["lesions"] == sorted(
        LESIONS.index(n) for n in ("cluster", "spiculated region", "asymmetry")
    )
    assert many.labels["birads"] == 5 and many.labels["density"] == 3
    assert [f["name"] for f in many.meta["findings"]] == [
        "cluster",
        "spiculated region",
        "point 1",
        "asymmetry",
    ]

    # by patient (the file name hash), stratified by any suspicious image: one test patient of each stratum
    split_of = {r.patient_id: r.split for r in cache.records}
    assert all(split_of[r.patient_id] == r.split for r in cache.records)
    assert sorted(split_of[p] for p in ("6c613a14b80a8591", "ac3185e18ffdc7b6")) == ["test", "train"]
    assert all(r.pretrain == (r.split != "test") for r in cache.records)

    reasons = skipped(out)
    stray = root / "AllDICOMs" / "30011484_349323117bf0fd93_MG_R_CC_ANON.dcm"
    assert reasons.pop(str(stray)) == f"{stray}: not in {table} (no row with File Name 30011484)"
    assert reasons.pop(f"{table} row 8 / 50997461") == f"no image file {root}/AllDICOMs/50997461_*.dcm"
    xml = root / "AllXML" / "99999999.xml"
    assert reasons.pop(str(xml)) == f"{xml}: not in {table} (no row with File Name 99999999)"
    assert reasons.pop(f"{table} row 9 / 53581379") == (
        "column 'ACR': unreadable value 'dense' (expected 1 to 4)"
    )
    assert "JPEG Extended" in reasons.pop(str(root / "AllDICOMs" / LOSSY))
    bad = root / "AllDICOMs" / "53581379_b231a8ba4dd4214f_MG_L_CC_ANON.dcm"
    assert reasons.pop(str(bad)) == f"{bad}: its row ({table} row 9) has an unreadable value"
    assert reasons == {}

    info = json.loads((out / "cache.json").read_text())
    join = info["join"]
    assert {k: join[k] for k in ("rows", "images", "rows_without_image", "images_without_row", "xml",
                                 "xml_without_row", "images_with_contours")} == {
        "rows": 7, "images": 8, "rows_without_image": 1, "images_without_row": 1, "xml": 3,
        "xml_without_row": 1, "images_with_contours": 2}  # fmt: skip
    assert join["roi_names"]["point 1"] == 1 and join["roi_names"]["mass"] == 1
    # the report counts cached films: the undecodable file's patient was drawn for test but has none cached
    assert info["patients"]["test"] == {"patients": 1, "images": 2}
    assert info["licence"]["weights_restricted"] is False and "authors" in info["licence"]["notice"]
    assert info["labels"]["lesions"] == {"kind": "multilabel", "classes": list(LESIONS)}


def test_inbreast_boxes_follow_downscale_and_mirror(tmp_path: Path) -> None:
    root = tmp_path / "inbreast"
    build(root, [InbreastImage("20586908", "6c613a14b80a8591", "R", "CC", rois=[("Mass", MASS)]),
                 InbreastImage("20586934", "6c613a14b80a8591", "R", "MLO")])  # fmt: skip
    cache = run(root, tmp_path / "cache", max_size=285, flip_to="left", test_fraction=0.0)
    rec = records(cache)["20586908"]
    s, (h, w) = rec.meta["scale"], cache.image(cache.records.index(rec)).shape
    assert rec.meta["flipped"] and max(h, w) == 285 and math.isclose(s, 285 / max(rec.meta["native_shape"]))
    assert rec.meta["findings"][0]["box"] == [
        math.floor(200 * s),
        math.floor(w - 150 * s),
        math.ceil(260 * s),
        math.ceil(w - 100 * s),
    ]
    assert rec.meta["spacing_mm"] == pytest.approx([SPACING / s] * 2)


def test_inbreast_builder_tree(tmp_path: Path) -> None:
    build_inbreast_tree(tmp_path / "i", 2)
    cache = run(tmp_path / "i", tmp_path / "out", test_fraction=0.0)
    assert len(cache) == 8 and not skipped(tmp_path / "out")
    assert len({r.patient_id for r in cache.records}) == 2
    lesion = [r for r in cache.records if r.labels["lesions"]]
    assert len(lesion) == 1 and lesion[0].labels["birads"] == 4 and lesion[0].meta["birads"] == "4c"


def test_inbreast_fail_stops_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "inbreast"
    table = build(root)
    with pytest.raises(PrepareError, match="column 'ACR': unreadable value 'dense'") as e:
        run(root, tmp_path / "out", on_error="fail")
    assert str(e.value).startswith(f"{table} row 9 / 53581379: ")
    assert not (tmp_path / "out" / "cache.json").exists()


def test_inbreast_undecodable_file_fails_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "inbreast"
    build(root, [InbreastImage("20586908", "6c613a14b80a8591", "R", "CC"),
                 InbreastImage("51048738", "3f22cdda8da215e3", "R", "CC", file=False)])  # fmt: skip
    with pytest.raises(PrepareError, match="decoder") as e:
        run(root, tmp_path / "out", on_error="fail")
    assert str(root / "AllDICOMs" / LOSSY) in str(e.value)
    assert not (tmp_path / "out" / "cache.json").exists()


def test_inbreast_metadata_traps(tmp_path: Path) -> None:
    root = tmp_path / "inbreast"
    one = [InbreastImage("20586908", "6c613a14b80a8591", "R", "CC", row={"Patient ID": "P7"})]
    table = write_inbreast(root, one)
    out = tmp_path / "out"
    # a real Patient ID takes precedence over the hash; no contours: no lesions label
    shutil.rmtree(root / "AllXML")
    with pytest.raises(PrepareError, match="AllXML: INbreast contour folder not found"):
        run(root, out)
    cache = run(root, out, contours=False, test_fraction=0.0)
    assert (cache.records[0].patient_id, cache.records[0].meta["patient_from"]) == ("P7", "csv")
    assert "lesions" not in cache.labels and "lesions" not in cache.records[0].labels

    write_csv(table, [["removed", "", "R", "CC", "", 20586908, 2, 2]], sep=",")
    with pytest.raises(PrepareError, match=f"{table}: the header is separated by ',', not ';'"):
        run(root, out, contours=False)
    write_csv(table, [["removed", "", "R", "CC", "", 20586908, 2]], header=HEADER[:-1])
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['Bi-Rads'\]; the file has \['Patient ID'"):
        run(root, out, contours=False)
    table.unlink()
    with pytest.raises(PrepareError, match=f"{table}: INbreast metadata CSV not found"):
        run(root, out, contours=False)
    (root / "INbreast.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(PrepareError, match="INbreast.xls is there: export it as a ';'-separated CSV"):
        run(root, out, contours=False)
    with pytest.raises(PrepareError, match="a spreadsheet; export it as a ';'-separated CSV"):
        run(root, out, contours=False, csv=str(root / "INbreast.xls"))
    with pytest.raises(PrepareError, match="INbreast folder not found"):
        run(tmp_path / "nowhere", out)


@pytest.mark.parametrize("seed", range(8))
def test_inbreast_splits_by_patient_stratified(seed: int) -> None:
    films = [Film(f"{p}-{k}.dcm", f"{p}-{k}", p, "train", labels={"suspicious": int(p < "c" and k == 1)})
             for p in "abcdefgh" for k in range(3)]  # fmt: skip
    assign_splits(films, 0.25, 0.5, seed)
    split_of = {f.patient_id: f.split for f in films}
    assert all(split_of[f.patient_id] == f.split for f in films)
    # suspicious: a, b (one test, none val of round(0.5)); not: c–h (3 test, round(1.5) = 2 val)
    assert sorted(split_of[p] for p in "ab") == ["test", "train"]
    assert sorted(split_of[p] for p in "cdefgh") == ["test"] * 3 + ["train"] + ["val"] * 2
    assert split_report(films)["test"] == {"patients": 4, "images": 12}
    assert all(f.pretrain == (f.split != "test") for f in films)


def test_inbreast_parsers() -> None:
    assert [file_id(v) for v in (20586908, "20586908.0", " 20586908 ", "2.0586908E7")] == ["20586908"] * 4
    assert [file_id(v) for v in ("", "2058.5", "abc", "-1", "nan")] == [None] * 5


def test_read_contours_tolerates_braces_and_rejects_bad_points(tmp_path: Path) -> None:
    path = tmp_path / "1.xml"
    path.write_bytes(plistlib.dumps({"Images": [{"ROIs": [
        {"Name": " Spiculated  Region ", "Point_px": ["{12.5, 30}", "{20, 40.25}"]},
        {"Name": "Mass", "Point_px": []},
    ]}]}))  # fmt: skip
    assert read_contours(path) == [{"box": [30.0, 12.5, 40.25, 20.0], "name": "spiculated region"}]
    path.write_bytes(plistlib.dumps({"Images": [{"ROIs": [{"Name": "Mass", "Point_px": ["(1.0)"]}]}]}))
    with pytest.raises(ValueError, match="point '\\(1.0\\)' is not"):
        read_contours(path)
    path.write_text("<plist><dict><key>Images")
    with pytest.raises(ValueError, match="not a readable plist"):
        read_contours(path)
