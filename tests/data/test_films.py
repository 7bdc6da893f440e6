"""Whole films in a cache (``data/films.py``) and crops of a physical size inside the breast
(``data/crops.py``, ``CacheDataset(crop_mm=...)``), on real CBIS-DDSM pixels written as DICOM films."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from film_fakes import VIEWS, real_film, write_film

from miram.bench.loader import bench_loader
from miram.data.cache import Cache, CacheError
from miram.data.collections.schema import COMMON
from miram.data.crops import crop_resize, inbreast_box, inbreast_cells, physical_size
from miram.data.datamodule import CacheDataset, MammoDataModule
from miram.data.films import Film, FilmSettings, prepare_films
from miram.seeding import Stream, derive_seed

SHRINK = 8
SPACING = 0.05 * SHRINK  # CBIS-DDSM films are scanned at about 50 µm


def build_films(root: Path, spacing: dict[str, float | None] | None = None) -> list[Film]:
    """The 8 real films (two patients) as DICOM files; ``spacing`` per view (default: PixelSpacing, all)."""
    films = []
    for case in (0, 1):
        for view in VIEWS:
            s = SPACING if spacing is None else spacing.get(view)
            path = write_film(
                root / f"p{case}" / f"{view}.dcm", real_film(view, case, SHRINK), patient_id=f"P{case}",
                laterality=view[0].upper(), view=view[1:].upper(), spacing=s,
            )  # fmt: skip
            films.append(
                Film(str(path), f"p{case}_{view}", f"P{case}", "train" if case == 0 else "val",
                     labels={"laterality": "lr".index(view[0])},
                     findings=[{"box": [100, 40, 140, 100], "name": "Mass"}])
            )  # fmt: skip
    return films


def prepare(root: Path, films: list[Film], **settings: object) -> Cache:
    s = FilmSettings(str(root / "cache"), **settings)  # type: ignore[arg-type]
    prepare_films(
        films, [], source="test-films", labels=COMMON, settings=s, check={}, metadata_files=[], workers=0,
        progress=False,
        extra={"licence": {"name": "test", "weights_restricted": True, "notice": "no weights"}},
    )  # fmt: skip
    return Cache(root / "cache")


@pytest.fixture(scope="module")
def film_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    root = tmp_path_factory.mktemp("films")
    return prepare(root, build_films(root / "src"), flip_to="left")


def full_mask(cache: Cache, index: int) -> np.ndarray:
    small, stride = cache.mask(index)
    h, w = cache.image(index).shape
    return small[np.arange(h) // stride][:, np.arange(w) // stride]


def test_films_keep_spacing_mirror_mask_and_boxes(film_cache: Cache) -> None:
    assert film_cache.kind == "films" and len(film_cache) == 8
    assert film_cache.info["spacing_from"] == {"PixelSpacing": 8} and film_cache.info["bits_stored"] == {
        "16": 8
    }
    for i, r in enumerate(film_cache.records):
        assert r.meta["spacing_mm"] == [SPACING, SPACING] and r.meta["scale"] == 1.0
        assert r.meta["laterality"] == r.key.split("_")[1][0].upper()
        mask = full_mask(film_cache, i)
        w = mask.shape[1]
        assert mask[:, : w // 2].sum() > mask[:, w - w // 2 :].sum()  # every breast now lies on the left
        # these films face outward, so exactly the right breasts were mirrored, and their boxes with them
        assert r.meta["flipped"] == (r.meta["laterality"] == "R")
        expected = [100, w - 100, 140, w - 40] if r.meta["flipped"] else [100, 40, 140, 100]
        assert r.meta["findings"] == [{"box": expected, "name": "Mass"}]
        y0, x0, y1, x1 = r.meta["breast_box"]
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert (y0, x0, y1, x1) == (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)


def test_downscaled_films_carry_scaled_spacing_and_boxes(tmp_path: Path) -> None:
    films = build_films(tmp_path / "src", spacing={"lcc": None, "lmlo": 0.4, "rcc": None, "rmlo": 0.4})[:4]
    write_film(films[2].path, real_film("rcc", 0, SHRINK), imager_spacing=0.3)  # ImagerPixelSpacing only
    cache = prepare(tmp_path, films, max_size=300, spacing_mm=0.5)
    by_key = {r.key: r for r in cache.records}
    for key, native_mm, source in [("p0_lcc", 0.5, "assumed"), ("p0_lmlo", 0.4, "PixelSpacing"),
                                   ("p0_rcc", 0.3, "ImagerPixelSpacing")]:  # fmt: skip
        meta = by_key[key].meta
        h, w = cache.image(cache.records.index(by_key[key])).shape
        assert max(h, w) == 300 and meta["scale"] == pytest.approx(300 / max(meta["native_shape"]))
        assert meta["spacing_from"] == source
        assert meta["spacing_mm"][0] == pytest.approx(native_mm * meta["native_shape"][0] / h, rel=2e-3)
        s = meta["scale"]
        assert meta["findings"][0]["box"] == [
            int(100 * s),
            int(40 * s),
            int(np.ceil(140 * s)),
            int(np.ceil(100 * s)),
        ]


def test_films_without_spacing_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    films = build_films(tmp_path / "src", spacing={})[:2]
    cache = prepare(tmp_path, films)
    assert cache.info["spacing_from"] == {"None": 2}
    assert all(r.meta["spacing_mm"] is None for r in cache.records)
    assert "2 film(s) have none: pass --spacing_mm" in capsys.readouterr().err
    ds = CacheDataset(cache, [0, 1], (32, 32), train=True, crop_mm=20.0)
    with pytest.raises(CacheError, match="p0_lcc.*no pixel spacing.*--spacing_mm"):
        ds[0]


def test_inbreast_boxes_are_always_mostly_breast() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        stride = int(rng.integers(1, 6))
        shape = (int(rng.integers(60, 200)), int(rng.integers(60, 200)))
        small = np.zeros((-(-shape[0] // stride), -(-shape[1] // stride)), dtype=bool)
        cy, cx, r = rng.uniform(0, small.shape[0]), rng.uniform(0, small.shape[1] / 2), rng.uniform(8, 40)
        yy, xx = np.mgrid[: small.shape[0], : small.shape[1]]
        small[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = True  # a disc of breast, anywhere
        full = small[np.arange(shape[0]) // stride][:, np.arange(shape[1]) // stride]
        size = (int(rng.integers(4, 40)), int(rng.integers(4, 40)))
        min_breast = float(rng.uniform(0.3, 0.95))
        cells = inbreast_cells(small, stride, shape, size, min_breast)
        draw = random.Random(trial)
        for _ in range(50 if cells.any() else 0):
            top, left, h, w = inbreast_box(cells, stride, shape, size, draw)
            assert (h, w) == size and 0 <= top <= shape[0] - h and 0 <= left <= shape[1] - w
            assert full[top : top + h, left : left + w].mean() >= min_breast


def test_inbreast_cells_lose_at_most_one_cell_per_edge() -> None:
    # a breast filling the image: every start from which the box fits is allowed
    stride, shape, size = 4, (50, 30), (12, 8)
    cells = inbreast_cells(np.ones((13, 8), dtype=bool), stride, shape, size, 1.0)
    assert cells.sum() == len(range(0, 50 - 12 + 1, 4)) * len(range(0, 30 - 8 + 1, 4))
    # half the image is breast, the box is small: starts more than one cell from the edge are allowed
    small = np.zeros((25, 20), dtype=bool)
    small[:, :10] = True
    cells = inbreast_cells(small, 1, (25, 20), (5, 5), 1.0)
    assert cells[:21, :6].all() and not cells[:, 6:].any()
    with pytest.raises(ValueError, match="no position holds a 30x5 box"):
        inbreast_box(inbreast_cells(small, 1, (25, 20), (30, 5), 0.5), 1, (25, 20), (30, 5), random.Random(0))


def test_physical_size_follows_spacing_and_aspect() -> None:
    assert physical_size((0.1, 0.1), 22.4, 1.0) == (224, 224)
    assert physical_size((0.07, 0.1), 14.0, 2.0) == (200, 280)


def test_pretraining_serves_only_inbreast_crops_of_the_physical_size(film_cache: Cache) -> None:
    dm = MammoDataModule(str(film_cache.root), image_size=(32, 32), batch_size=4, num_workers=0, crop_mm=22.4)
    ds = dm.dataset("train", train=True)
    assert isinstance(ds, CacheDataset) and len(ds) == 4
    side = round(22.4 / SPACING)
    for epoch in range(3):
        for i, index in enumerate(ds.indices):
            boxes = ds._film_boxes(index, random.Random(0), 20)
            mask = full_mask(film_cache, index)
            for top, left, h, w in boxes:
                assert (h, w) == (side, side)
                assert mask[top : top + h, left : left + w].mean() >= 0.5
            # the item is the crop of the box its stream draws, resampled to the model's size
            image, _ = ds[(epoch, i)]
            box = ds._film_boxes(index, random.Random(derive_seed(ds.seed, Stream.CROP, epoch, index)), 1)[0]
            torch.testing.assert_close(image, crop_resize(film_cache.image(index), box, (32, 32)))
            assert mask[box[0] : box[0] + side, box[1] : box[1] + side].mean() >= 0.5
    batch, _ = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 32, 32) and batch.dtype == torch.uint16


def test_films_too_small_for_the_crop_are_left_out(
    film_cache: Cache, capsys: pytest.CaptureFixture[str]
) -> None:
    # 110 mm squares: about the breast's width on these films, so some breasts can no longer hold one
    dm = MammoDataModule(str(film_cache.root), image_size=(32, 32), num_workers=0, crop_mm=110.0)
    ds = dm.dataset("train", train=True)
    assert isinstance(ds, CacheDataset) and 0 < len(ds) < 4
    assert f"{4 - len(ds)} of 4 train films cannot hold a 110.0 mm crop" in capsys.readouterr().err
    with pytest.raises(CacheError, match="no records in split 'train'"):
        MammoDataModule(str(film_cache.root), image_size=(32, 32), crop_mm=500.0).dataset("train", train=True)


def test_crop_mm_needs_a_film_cache(phantom_cache: str) -> None:
    with pytest.raises(CacheError, match="crop_mm needs a cache of whole films"):
        MammoDataModule(phantom_cache, crop_mm=20.0).dataset("train", train=True)
    with pytest.raises(ValueError, match="crop_mm must be positive"):
        MammoDataModule(phantom_cache, crop_mm=0.0)


def test_whole_films_are_evaluated_whole(film_cache: Cache) -> None:
    ds = CacheDataset(film_cache, [0], (64, 32), train=False)
    image, _ = ds[0]
    y0, x0, y1, x1 = film_cache.records[0].meta["breast_box"]
    assert (y1 - y0) / (x1 - x0) > 2  # a tall breast: the whole of it, padded to 2:1, not a centre cut
    # grown about its centre to 2:1 over the film's own pixels, zero where that leaves the film
    w2 = max(x1 - x0, round((y1 - y0) / 2))
    left = x0 - (w2 - (x1 - x0)) // 2
    padded = np.pad(film_cache.image(0), ((0, 0), (w2, w2)))
    region = padded[y0:y1, left + w2 : left + 2 * w2]
    torch.testing.assert_close(image, crop_resize(region, (0, 0, *region.shape), (64, 32)))


def test_cache_json_keeps_the_licence(film_cache: Cache) -> None:
    info = json.loads((film_cache.root / "cache.json").read_text())
    assert info["licence"]["weights_restricted"] is True


def test_bench_loader_times_inbreast_crops(film_cache: Cache) -> None:
    result = bench_loader(str(film_cache.root), size=32, workers=0, batch_size=4, seconds=0.2, crop_mm=22.4)
    assert result["crops_per_s"] > 0 and result["crops"] >= 4


def test_two_views_are_two_inbreast_crops(film_cache: Cache) -> None:
    ds = CacheDataset(film_cache, [0], (32, 32), train=True, views=2, crop_mm=22.4)
    views, _ = ds[(0, 0)]
    assert views.shape == (2, 1, 32, 32) and not torch.equal(views[0], views[1])
    rng = random.Random(derive_seed(ds.seed, Stream.CROP, 0, 0))
    for view, box in zip(views, ds._film_boxes(0, rng, 2)):
        torch.testing.assert_close(view, crop_resize(film_cache.image(0), box, (32, 32)))
