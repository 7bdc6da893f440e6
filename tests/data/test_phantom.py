from __future__ import annotations

import numpy as np

from miram.data.cache import Cache
from miram.data.phantom import LABELS, prepare_phantoms, render_phantom


def test_phantoms_are_deterministic_per_seed_and_index() -> None:
    a, info_a = render_phantom(3, 7, 64)
    b, info_b = render_phantom(3, 7, 64)
    c, _ = render_phantom(3, 8, 64)
    assert a.dtype == np.uint16 and a.shape == (64, 64)
    assert np.array_equal(a, b) and info_a == info_b
    assert not np.array_equal(a, c)


def test_phantom_label_mix_follows_the_descriptor_tables() -> None:
    infos = [render_phantom(0, i, 32)[1] for i in range(400)]
    mass = [i for i in infos if i["lesion_type"] == "mass"]
    assert 0.35 < len(mass) / len(infos) < 0.57  # CBIS-DDSM train: 46 % masses
    spic = [i["malignant"] for i in mass if i["descriptor"] == "SPICULATED"]
    circ = [i["malignant"] for i in mass if i["descriptor"] == "CIRCUMSCRIBED"]
    assert np.mean(spic) > 0.75 and np.mean(circ) < 0.3


def _high_pass_peak(x: np.ndarray, k: int = 5) -> float:
    padded = np.pad(x, k // 2, mode="edge")
    c = np.pad(np.cumsum(np.cumsum(padded, 0), 1), ((1, 0), (1, 0)))
    blur = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / k**2
    return float((x - blur).max())


def test_fine_calcifications_lose_contrast_at_the_input_scale() -> None:
    # ratio of the sharpest local contrast at the high scale to that after 2x2 averaging (input scale)
    ratios: dict[str, list[float]] = {"fine": [], "mass": []}
    for i in range(240):
        image, info = render_phantom(0, i, 128)
        hr = image.astype(float) / 65535
        lr = hr.reshape(64, 2, 64, 2).mean(axis=(1, 3))
        if info["descriptor"] in ("PLEOMORPHIC", "PUNCTATE", "FINE_LINEAR_BRANCHING"):
            ratios["fine"].append(_high_pass_peak(hr) / _high_pass_peak(lr))
        elif info["lesion_type"] == "mass":
            ratios["mass"].append(_high_pass_peak(hr) / _high_pass_peak(lr))
    assert np.median(ratios["fine"]) > 1.15
    assert np.median(ratios["fine"]) > np.median(ratios["mass"]) + 0.2


def test_prepare_phantoms_writes_a_cache_with_splits_and_labels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = prepare_phantoms(str(tmp_path / "c"), num=30, size=64, seed=1)
    cache = Cache(out)
    assert len(cache) == 30 and set(cache.labels) == set(LABELS)
    assert {r.split for r in cache.records} <= {"train", "val", "test"}
    assert cache.image(0).shape == (64, 64)
    again = prepare_phantoms(str(tmp_path / "c"), num=30, size=64, seed=1)  # idempotent, resumes
    assert Cache(again).records == cache.records
