"""The training read path: crop geometry and resampling, uint16 hand-over, normalisation on the device."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from miram.data import cache as cache_module
from miram.data.cache import Cache, CacheRecord, CacheWriter, LabelSpec
from miram.data.crops import center_box, crop_resize
from miram.data.datamodule import CacheDataset, MammoDataModule


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1000, 60000, (h, w)).astype(np.uint16)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    writer = CacheWriter(tmp_path / "c", "test")
    for i in range(6):
        split = "train" if i < 4 else "val"
        writer.add(CacheRecord(f"r{i}", split, f"p{i}", labels={"y": i % 2}), _textured(64, 64 + 16 * i, i))
    writer.finalize({"y": LabelSpec("binary", ["a", "b"])})
    return tmp_path / "c"


def test_a_box_at_the_output_size_returns_the_stored_pixels() -> None:
    image = _textured(50, 70)
    out = crop_resize(image, (3, 5, 32, 40), (32, 40))
    assert out.dtype == torch.uint16 and out.shape == (1, 32, 40)
    assert np.array_equal(out[0].numpy(), image[3:35, 5:45])


def test_integer_reductions_average_pixel_blocks() -> None:
    image = _textured(64, 96)
    out = crop_resize(image, (0, 0, 64, 96), (32, 48))
    blocks = image.astype(np.float64).reshape(32, 2, 48, 2).mean(axis=(1, 3))
    assert np.abs(out[0].numpy().astype(np.float64) - blocks).max() <= 0.5


def test_resampling_keeps_flat_images_flat_and_stays_in_range() -> None:
    flat = np.full((90, 130), 4321, np.uint16)
    for size in [(32, 32), (50, 77), (200, 260)]:
        out = crop_resize(flat, (0, 0, 90, 130), size)
        assert out.shape == (1, *size) and bool((out.int() == 4321).all())
    edge = np.zeros((40, 40), np.uint16)
    edge[:, 20:] = 65535
    up = crop_resize(edge, (0, 0, 40, 40), (97, 97))[0].int()
    assert int(up.min()) == 0 and int(up.max()) == 65535


def test_dataset_hands_over_uint16_and_eval_crops_are_centred(cache_dir: Path) -> None:
    opened = Cache(cache_dir)
    ds = CacheDataset(opened, opened.indices("train"), (64, 64), train=False, label="y")
    image, target = ds[1]
    assert image.dtype == torch.uint16 and image.shape == (1, 64, 64) and int(target) == 1
    top, left, h, w = center_box(64, 80, 1.0)
    assert np.array_equal(image[0].numpy(), np.asarray(opened.image(1))[top : top + h, left : left + w])
    train = CacheDataset(opened, opened.indices("train"), (48, 40), train=True)
    assert all(train[i][0].shape == (1, 48, 40) for i in range(len(train)))


def test_normalize_standardises_with_the_cache_statistics(cache_dir: Path) -> None:
    dm = MammoDataModule(str(cache_dir), image_size=(64, 64), num_workers=0, label="y")
    stats = dm.cache.stats
    raw = torch.from_numpy(_textured(64, 64)[None, None].copy())
    expected = (raw.double() / 65535 - stats["mean"]) / stats["std"]
    out = dm.normalize(raw)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="uint16"):
        dm.normalize(out)


def test_every_batch_a_model_sees_is_normalised(cache_dir: Path) -> None:
    dm = MammoDataModule(str(cache_dir), image_size=(64, 64), batch_size=4, num_workers=0, label="y")
    raw, _ = next(iter(dm.val_dataloader()))
    assert raw.dtype == torch.uint16
    images, _ = dm.on_after_batch_transfer((raw, torch.zeros(2)), 0)
    torch.testing.assert_close(images, dm.normalize(raw))
    batches = list(dm.eval_loader("train"))
    assert sum(b[0].shape[0] for b in batches) == 4 and batches[0][0].dtype == torch.float32
    torch.testing.assert_close(dm.images("val", 1), dm.normalize(raw[:1]))


def test_open_maps_are_bounded_and_not_pickled(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_OPEN_MAPS", 2)
    opened = Cache(cache_dir)
    for i in range(len(opened)):
        assert opened.image(i).shape[0] == 64
        assert len(opened._maps) <= 2
    assert pickle.loads(pickle.dumps(opened))._maps == {}
