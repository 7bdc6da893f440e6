"""``miram prepare mini-mias`` on small trees: PGM films, ``Info.txt`` with notes, several lines per film,
calcifications without coordinates, circles with a bottom-left origin."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from trees_mias import build_mias_tree, film_pixels, write_info, write_pgm

from miram.data.cache import Cache, CacheRecord, PrepareError
from miram.data.collections.mias import CLASSES, assign_splits, parse_line, prepare_mias
from miram.data.films import Film
from miram.data.splits import draw_splits, split_report

LINES = [
    "mdb001 G CIRC B 200 300 40",
    "mdb002 G NORM ",
    "mdb003 D CIRC B 120 400 10",  # two abnormalities: the benign one first, the malignant one wins
    "mdb003\tD  CALC M 100 150 20",
    "mdb004 d calc b *NOTE 3*",  # spread calcifications: no circle
    "MDB005 F SPIC M 150.0 50 200",  # a circle past the bottom-left corner: clipped
    "mdb006 F ASYM B 100 100 30",  # no file
    "mdb007 F XXXX B 100 100 30",  # an unreadable class (its file exists)
    "mdb009 G CIRC B 1000 900 30",  # the centre of a 1024-pixel film, outside this 365-pixel-wide one
    "mdb010 G NORM",  # a truncated file
]


def traps(root: Path, info: str = "Info.txt") -> Path:
    """Files mdb001-005, mdb007, mdb008 (not listed), mdb009 and a truncated mdb010; ``LINES`` (header at line
    1, so ``LINES[i]`` is line ``i + 2``)."""
    for number in (1, 2, 3, 4, 5, 7, 8, 9):
        write_pgm(root, number, case=((number - 1) // 2) % 2)
    (root / "mdb010.pgm").write_bytes(b"P5\n365 567\n255\n" + bytes(1000))
    return write_info(root / info, LINES)


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {r["input"]: r["reason"] for r in csv.DictReader(f)}


def run(root: Path, out: Path, **kw: object) -> Cache:
    kw = {"workers": 0, "progress": False, **kw}
    return Cache(prepare_mias(str(root), str(out), **kw))  # type: ignore[arg-type]


def by_ref(cache: Cache) -> dict[str, CacheRecord]:
    return {r.meta["mias_ref"]: r for r in cache.records}


def test_mias_join_labels_boxes_splits(tmp_path: Path) -> None:
    root = tmp_path / "all-mias"
    info = traps(root)
    out = tmp_path / "cache"
    cache = run(root, out, val_fraction=0.0, test_fraction=0.5)
    recs = by_ref(cache)
    assert sorted(recs) == ["mdb001", "mdb002", "mdb003", "mdb004", "mdb005"]

    circ, calc, spic, norm = (CLASSES.index(c) for c in ("CIRC", "CALC", "SPIC", "NORM"))
    labels = {ref: r.labels for ref, r in recs.items()}
    # odd = right, even = left (README note 1); every MIAS film is an MLO
    assert labels["mdb001"] == {"tissue": 1, "abnormality": circ, "pathology": 0, "cancer": 0,
                                "laterality": 1, "view": 1}  # fmt: skip
    assert labels["mdb002"] == {"tissue": 1, "abnormality": norm, "pathology": None, "cancer": 0,
                                "laterality": 0, "view": 1}  # fmt: skip
    assert labels["mdb003"] == {"tissue": 2, "abnormality": calc, "pathology": 1, "cancer": 1,
                                "laterality": 1, "view": 1}  # fmt: skip
    assert labels["mdb004"] == {"tissue": 2, "abnormality": calc, "pathology": 0, "cancer": 0,
                                "laterality": 0, "view": 1}  # fmt: skip
    assert labels["mdb005"]["tissue"] == 0 and labels["mdb005"]["abnormality"] == spic
    assert (recs["mdb004"].meta["laterality"], recs["mdb004"].meta["view"]) == ("L", "MLO")

    # no spacing in PGM: the mini database's 0.2 mm, recorded as assumed; 8-bit raster, no bits_stored
    first = recs["mdb001"].meta
    assert first["spacing_mm"] == pytest.approx([0.2, 0.2]) and first["spacing_from"] == "assumed"
    assert first["bits_stored"] is None and first["scale"] == 1.0

    # circles (x, y from the BOTTOM-left corner) → boxes from the top-left, with the film's own height
    height, width = film_pixels(1).shape  # 567 x 365: not 1024
    assert first["native_shape"] == [height, width]
    top = height - 300
    assert first["findings"] == [{"box": [top - 40, 160, top + 40, 240], "abnormality": "CIRC",
                                  "severity": "B", "centre_xy": [200.0, 300.0], "radius": 40.0}]  # fmt: skip
    h3 = film_pixels(3, case=1).shape[0]
    assert [f["box"] for f in recs["mdb003"].meta["findings"]] == [
        [h3 - 400 - 10, 110, h3 - 400 + 10, 130],
        [h3 - 150 - 20, 80, h3 - 150 + 20, 120],
    ]
    assert [f["severity"] for f in recs["mdb003"].meta["findings"]] == ["B", "M"]
    assert recs["mdb004"].meta["findings"] == [] and recs["mdb002"].meta["findings"] == []
    # x - r < 0 and y_top + r > height: clipped to the image
    assert recs["mdb005"].meta["findings"][0]["box"] == [height - 50 - 200, 0, height, 350]

    # patients are film pairs, drawn by cancer (any M film) before decoding: P002 and P003 (cancer) split one
    # test one train; P001 and P005 (mdb010, not decodable) likewise
    assert {ref: r.patient_id for ref, r in recs.items()} == {
        "mdb001": "P001", "mdb002": "P001", "mdb003": "P002", "mdb004": "P002", "mdb005": "P003"}  # fmt: skip
    split_of = {r.patient_id: r.split for r in cache.records}
    assert all(split_of[r.patient_id] == r.split for r in cache.records)
    strata = {"P001": "no cancer", "P002": "cancer", "P003": "cancer", "P005": "no cancer"}
    assert split_of == {p: s for p, s in draw_splits(strata, 0.0, 0.5, 0).items() if p != "P005"}
    assert sorted(split_of[p] for p in ("P002", "P003")) == ["test", "train"]
    assert all(r.pretrain == (r.split != "test") for r in cache.records)

    reasons = skipped(out)
    assert reasons.pop(f"{info} line 8 / mdb006") == f"no image file {root / 'mdb006.pgm'}"
    assert reasons.pop(f"{info} line 9 / mdb007") == (
        "field 3 (class) 'XXXX' unreadable (expected CALC, CIRC, SPIC, MISC, ARCH, ASYM, NORM)"
    )
    assert reasons.pop(str(root / "mdb008.pgm")) == f"not in {info}"
    assert reasons.pop(f"{info} line 10 / mdb009") == (
        f"centre (1000.0, 900.0) outside the 365x567 image {root / 'mdb009.pgm'}"
    )
    assert "truncated" in reasons.pop(str(root / "mdb010.pgm"))
    assert reasons == {}

    data = json.loads((out / "cache.json").read_text())
    assert data["join"] == {"join": "Info.txt reference number (mdb###) = image file stem", "rows": 9,
                            "images": 9, "rows_without_image": 1, "images_without_row": 1, "films": 6,
                            "info_lines": 10}  # fmt: skip
    assert data["licence"]["weights_restricted"] is False and "Suckling" in data["licence"]["notice"]
    assert data["spacing_from"] == {"assumed": 5} and data["kind"] == "films"
    assert data["labels"]["abnormality"] == {"kind": "multiclass", "classes": list(CLASSES)}


def test_mias_downscaled_boxes_and_no_spacing(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_pgm(root, 1)
    write_info(root / "Info.txt", [LINES[0]])
    cache = run(root, tmp_path / "out", max_size=283, spacing_mm=None, test_fraction=0.0)
    meta = cache.records[0].meta
    scale = meta["scale"]
    assert math.isclose(scale, 283 / 567) and max(cache.image(0).shape) == 283
    assert meta["spacing_mm"] is None and meta["spacing_from"] is None
    top = 567 - 300
    box = [top - 40, 160, top + 40, 240]
    assert meta["findings"][0]["box"] == [math.floor(box[0] * scale), math.floor(box[1] * scale),
                                          math.ceil(box[2] * scale), math.ceil(box[3] * scale)]  # fmt: skip
    # a user-stated spacing is recorded instead of 0.2
    cache = run(root, tmp_path / "out2", spacing_mm=0.05, test_fraction=0.0)
    assert cache.records[0].meta["spacing_mm"] == pytest.approx([0.05, 0.05])


def test_parse_line() -> None:
    assert parse_line("G CIRC B 535 425 197".split()) == ("G", "CIRC", "B", (535.0, 425.0, 197.0))
    assert parse_line("d norm".split()) == ("D", "NORM", None, None)
    assert parse_line("F NORM whatever 1 2".split()) == ("F", "NORM", None, None)
    assert parse_line("G CALC M *NOTE 3*".split()) == ("G", "CALC", "M", None)
    assert parse_line("G CALC M".split()) == ("G", "CALC", "M", None)
    assert parse_line("G CIRC B 535.0 425 197.5".split()) == ("G", "CIRC", "B", (535.0, 425.0, 197.5))
    for tokens, message in [
        ("X CIRC B 1 2 3", "field 2 (tissue) 'X'"),
        ("G", "at least tissue and class"),
        ("G CIRC 535 425 197", "field 4 (severity) '535'"),
        ("G CIRC", "field 4 (severity) missing"),
        ("G CIRC B 535 425", "fields 5-7 (x y radius) '535 425'"),
        ("G CIRC B 535 425 0", "field 7 (radius) '0' is not positive"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_line(tokens.split())


def test_mias_lines_that_disagree_drop_the_film(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_pgm(root, 1)
    write_pgm(root, 2)
    lines = ["mdb001 G NORM", "mdb002 G CIRC B 100 100 10", "mdb002 D CIRC B 1 1 1"]
    info = write_info(root / "Info.txt", lines)
    cache = run(root, tmp_path / "out", test_fraction=0.0)
    assert [r.meta["mias_ref"] for r in cache.records] == ["mdb001"]
    assert skipped(tmp_path / "out") == {f"{info} line 4 / mdb002": "tissue D differs from line 3 (G)"}


def test_mias_fail_stops_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "m"
    info = traps(root)
    with pytest.raises(PrepareError, match=re.escape(f"{info} line 9 / mdb007: field 3 (class) 'XXXX'")):
        run(root, tmp_path / "out", on_error="fail")
    assert not (tmp_path / "out" / "cache.json").exists()
    # a file that cannot be decoded stops the run naming it
    root2 = tmp_path / "m2"
    write_pgm(root2, 1)
    (root2 / "mdb002.pgm").write_bytes(b"P5\n365 567\n255\n" + bytes(10))
    write_info(root2 / "Info.txt", ["mdb001 G NORM", "mdb002 G NORM"])
    with pytest.raises(PrepareError, match=re.escape(str(root2 / "mdb002.pgm"))):
        run(root2, tmp_path / "out2", on_error="fail", test_fraction=0.0)
    assert not (tmp_path / "out2" / "cache.json").exists()


def test_mias_film_list_found_or_named(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_pgm(root / "all-mias", 1)
    with pytest.raises(PrepareError, match="folder not found"):
        run(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(PrepareError, match=re.escape(f"{root / 'Info.txt'}: mini-MIAS film list not found")):
        run(root, tmp_path / "out")
    readme = tmp_path / "README"
    with pytest.raises(PrepareError, match=re.escape(f"{readme}: mini-MIAS film list not found")):
        run(root, tmp_path / "out", info=str(readme))
    # a list without any film line
    (root / "all-mias" / "info.txt").write_text("REFNUM BG CLASS SEVERITY X Y RADIUS\n")
    with pytest.raises(PrepareError, match="no film line"):
        run(root, tmp_path / "out")
    # info.txt in lower case, one folder down; or the README's own list, passed with --info
    write_info(root / "all-mias" / "info.txt", ["mdb001 G NORM"])
    assert len(run(root, tmp_path / "out", test_fraction=0.0)) == 1
    write_info(readme, ["mdb001 F CIRC B 100 100 10"])
    cache = run(root, tmp_path / "out3", info=str(readme), test_fraction=0.0)
    assert cache.records[0].labels["tissue"] == 0 and len(cache.records[0].meta["findings"]) == 1


@pytest.mark.parametrize("seed", range(6))
def test_mias_splits_by_pair_and_cancer(seed: int) -> None:
    # pairs P001-P002 have a malignant film; P003-P008 none
    films = [
        Film(f"mdb{n:03d}.pgm", f"k{n}", f"P{(n + 1) // 2:03d}", "train", labels={"cancer": int(n in (1, 4))})
        for n in range(1, 17)
    ]
    assign_splits(films, 0.25, 0.5, seed)
    split_of = {f.patient_id: f.split for f in films}
    assert all(split_of[f.patient_id] == f.split for f in films)
    assert sorted(split_of[p] for p in ("P001", "P002")) == ["test", "train"]
    assert sorted(split_of[f"P{i:03d}"] for i in range(3, 9)) == ["test"] * 3 + ["train"] + ["val"] * 2
    assert split_report(films)["test"] == {"patients": 4, "images": 8}


def test_mias_builder_tree(tmp_path: Path) -> None:
    build_mias_tree(tmp_path / "m", 3)
    cache = run(tmp_path / "m", tmp_path / "out", test_fraction=0.0)
    assert len(cache) == 6 and not skipped(tmp_path / "out")
    cancer = sorted(r.meta["mias_ref"] for r in cache.records if r.labels["cancer"] == 1)
    assert cancer == ["mdb003", "mdb005"]
    assert {r.patient_id for r in cache.records} == {"P001", "P002", "P003"}
