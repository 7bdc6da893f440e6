"""Deterministic mammogram-like lesion crops: the built-in benchmark and demo data.

Each phantom is a lesion-centred crop at native (high) resolution, built in physical units (mm) and
rendered on a 2x supersampled canvas then area-averaged, like a detector integrating over its pixels:

- background: fibroglandular tissue from power-law ("1/f^beta") noise, beta ~ U(2.6, 3.2) (anatomical
  noise of mammograms, Burgess et al., Med Phys 2001: beta ~ 2.8-3.0), thresholded softly to a glandular
  fraction set by the BI-RADS density;
- masses: an elliptical or lobulated core whose outline and edge depend on the margin (circumscribed:
  sharp, smooth; microlobulated: small undulations; ill-defined: blurred; obscured: overlapped by tissue;
  spiculated: irregular core plus radiating spicules);
- calcifications: clusters of bright specks whose size and form depend on the type (coarse, round,
  punctate, lucent-centred, amorphous, fine pleomorphic, fine linear branching) and whose layout depends
  on the distribution. Fine forms are 0.1-0.5 mm: a few pixels at the high scale, sub-pixel blurs at the
  input scale.

Descriptors and P(malignant | descriptor) come from ``phantom_lesions.py``; pathology is drawn from them, so
the benchmark carries realistic label noise and favours no method. Sample ``i`` of seed ``s`` depends only
on ``(s, i)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from miram.data import phantom_lesions as lx
from miram.data.cache import CacheRecord, CacheWriter, LabelSpec

TYPE_PATHOLOGY = ["BENIGN_MASS", "MALIGNANT_MASS", "BENIGN_CALC", "MALIGNANT_CALC"]

LABELS = {
    "pathology": LabelSpec("binary", ["BENIGN", "MALIGNANT"]),
    "lesion_type": LabelSpec("multiclass", ["mass", "calcification"]),
    "type_pathology": LabelSpec("multiclass", TYPE_PATHOLOGY),
    "margins": LabelSpec("multilabel", lx.MARGIN_NAMES),
    "calc_type": LabelSpec("multiclass", lx.CALC_TYPE_NAMES),
    "density": LabelSpec("value"),
}


def _choice(rng: np.random.Generator, items: list[Any], weights: list[float]) -> Any:
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def power_law_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """``(n, n)`` zero-mean unit-variance noise whose power spectrum falls as 1/f^beta."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = np.inf  # no DC component
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) * f ** (-beta / 2)
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / (field.std() + 1e-12)


def _background(rng: np.random.Generator, n: int, density: int) -> np.ndarray:
    noise = power_law_noise(rng, n, rng.uniform(2.6, 3.2))
    target = lx.DENSITY_GLANDULAR[density]
    glandular = 1 / (1 + np.exp(-1.6 * (noise - np.quantile(noise, 1 - target))))
    return 0.18 + 0.42 * glandular  # fatty tissue dark, glandular bright (film optical density)


def _mass(rng: np.random.Generator, canvas: np.ndarray, mm: float, radius_mm: float, margin: str) -> None:
    n = canvas.shape[0]
    yy, xx = (np.mgrid[0:n, 0:n] - (n - 1) / 2) * mm  # mm from the centre
    r, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    aspect = rng.uniform(0.7, 1.0)
    outline = np.ones_like(theta)
    harmonics = {"CIRCUMSCRIBED": [], "OBSCURED": [], "MICROLOBULATED": [(12, 20, 0.04, 0.08)]}
    for lo, hi, alo, ahi in harmonics.get(margin, [(2, 6, 0.10, 0.25), (7, 12, 0.03, 0.08)]):
        for k in rng.integers(lo, hi + 1, size=3):
            outline += rng.uniform(alo, ahi) / 3 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    phi = rng.uniform(0, np.pi)
    ellipse = np.sqrt((np.cos(theta - phi)) ** 2 + (np.sin(theta - phi) / aspect) ** 2)
    rho = r * ellipse / (radius_mm * outline)  # < 1 inside
    edge_mm = {"ILL_DEFINED": rng.uniform(0.8, 1.6), "SPICULATED": 0.4}.get(margin, 0.12)
    inside = 1 / (1 + np.exp(np.clip((rho - 1) * radius_mm / edge_mm * 4, -50, 50)))
    dome = np.clip(1 - rho**2, 0, 1) ** 0.3
    contrast = rng.uniform(0.10, 0.22)
    lesion = contrast * (0.6 * inside + 0.4 * dome * inside)
    if margin == "SPICULATED":
        for _ in range(int(rng.integers(8, 20))):
            ang = rng.uniform(0, 2 * np.pi)
            length = radius_mm * rng.uniform(0.6, 1.6)
            width = rng.uniform(0.12, 0.35)
            along = xx * np.cos(ang) + yy * np.sin(ang) - radius_mm * 0.8
            across = -xx * np.sin(ang) + yy * np.cos(ang)
            taper = np.clip(1 - along / length, 0, 1) * (along > 0)
            lesion += contrast * 0.8 * taper * np.exp(-((across / (width * (taper + 0.2))) ** 2))
    if margin == "OBSCURED":
        # overlapping fibroglandular tissue hides part of the border
        cover = power_law_noise(rng, n, 2.8)
        lesion *= 1 - 0.6 * (cover > 0.3) * (np.abs(rho - 1) < 0.35)
    canvas += lesion


def _calc_positions(rng: np.random.Generator, count: int, extent_mm: float, distribution: str) -> np.ndarray:
    if distribution == "LINEAR":
        t = rng.uniform(-0.5, 0.5, count) * extent_mm
        ang = rng.uniform(0, np.pi)
        pts = np.stack([t * np.cos(ang), t * np.sin(ang)], 1) + rng.normal(0, extent_mm * 0.03, (count, 2))
    elif distribution == "SEGMENTAL":
        angles = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.35, count)  # a wedge from the apex
        rad = rng.uniform(0, 0.55, count) * extent_mm
        apex = 0.25 * extent_mm * np.array([np.cos(angles.mean()), np.sin(angles.mean())])
        pts = np.stack([rad * np.cos(angles), rad * np.sin(angles)], 1) - apex
    elif distribution == "REGIONAL":
        pts = rng.uniform(-0.45, 0.45, (count, 2)) * extent_mm
    else:  # CLUSTERED
        pts = rng.normal(0, extent_mm * 0.18, (count, 2))
    return np.asarray(pts)


def _calcs(
    rng: np.random.Generator, canvas: np.ndarray, mm: float, extent_mm: float, kind: str, dist: str
) -> None:
    n = canvas.shape[0]
    lo, hi, contrast = lx.CALC_GEOMETRY[kind]
    count = int(rng.integers(25, 60) if kind == "AMORPHOUS" else rng.integers(6, 25))
    if kind in ("COARSE", "LUCENT_CENTER"):
        count = int(rng.integers(2, 7))
    for cy, cx in _calc_positions(rng, count, extent_mm, dist):
        size = rng.uniform(lo, hi)
        half = int(math.ceil((size * (6 if kind == "FINE_LINEAR_BRANCHING" else 1.5)) / mm)) + 2
        py, px = int(round(cy / mm + n / 2)), int(round(cx / mm + n / 2))
        y0, y1, x0, x1 = max(py - half, 0), min(py + half + 1, n), max(px - half, 0), min(px + half + 1, n)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = (yy - py) * mm, (xx - px) * mm
        ang = rng.uniform(0, np.pi)
        u, v = dx * np.cos(ang) + dy * np.sin(ang), -dx * np.sin(ang) + dy * np.cos(ang)
        if kind == "FINE_LINEAR_BRANCHING":
            length = size * rng.uniform(3, 12)
            shape = (np.abs(v) < size / 2) & (np.abs(u) < length / 2)
            bend = rng.uniform(-0.8, 0.8)  # a branch leaving from the middle
            ub, vb = u * np.cos(bend) + v * np.sin(bend), -u * np.sin(bend) + v * np.cos(bend)
            shape |= (np.abs(vb) < size / 2) & (ub > 0) & (ub < length / 3)
        elif kind == "PLEOMORPHIC":
            a, b = size / 2, size / 2 * rng.uniform(0.3, 1.0)
            wobble = 1 + 0.35 * np.cos(3 * np.arctan2(v, u) + rng.uniform(0, 6.3))
            shape = (u / a) ** 2 + (v / b) ** 2 < wobble
        elif kind == "COARSE":
            wobble = 1 + 0.3 * np.cos(5 * np.arctan2(v, u) + rng.uniform(0, 6.3))
            shape = np.hypot(u, v) < size / 2 * wobble
        else:
            shape = np.hypot(u, v) < size / 2
        value = shape.astype(float) * contrast * rng.uniform(0.7, 1.0)
        if kind == "LUCENT_CENTER":
            value[np.hypot(u, v) < size * 0.3] *= 0.15
        canvas[y0:y1, x0:x1] += value


def render_phantom(seed: int, index: int, size: int = 224) -> tuple[np.ndarray, dict[str, Any]]:
    """Render phantom ``index`` of ``seed``.

    Args:
        seed: dataset seed.
        index: sample index.
        size: side of the square crop in pixels (the highest scale's resolution).

    Returns:
        uint16 image ``(size, size)`` and its description (lesion type, descriptor, pathology, mm per pixel).
    """
    rng = np.random.default_rng([seed, index])
    is_mass = rng.uniform() < lx.MASS_FRACTION
    density = int(_choice(rng, list(lx.DENSITY_WEIGHTS), list(lx.DENSITY_WEIGHTS.values())))
    if is_mass:
        desc = _choice(rng, list(lx.MASS_MARGINS), [d.weight for d in lx.MASS_MARGINS])
        radius = rng.uniform(4.0, 12.0)  # mm: masses of 8-24 mm diameter
        fov = 2 * radius * rng.uniform(1.15, 1.5)  # lesion-crop protocol: square around the lesion
    else:
        desc = _choice(rng, list(lx.CALC_TYPES), [d.weight for d in lx.CALC_TYPES])
        distribution = _choice(
            rng, [d for d, _ in lx.CALC_DISTRIBUTIONS], [w for _, w in lx.CALC_DISTRIBUTIONS]
        )
        extent = rng.uniform(6.0, 20.0)  # mm: cluster extents of CBIS-DDSM calc ROIs
        fov = extent * rng.uniform(1.1, 1.4)
    n = 2 * size  # supersampled canvas
    mm = fov / n
    canvas = _background(rng, n, density)
    if is_mass:
        _mass(rng, canvas, mm, radius, desc.name)
    else:
        _calcs(rng, canvas, mm, extent, desc.name, distribution)
    image = canvas.reshape(size, 2, size, 2).mean(axis=(1, 3))  # detector integrates over its pixels
    image = image + rng.normal(0, 0.008, image.shape)  # quantum and film-grain noise
    malignant = bool(rng.uniform() < desc.p_malignant)
    info = {
        "lesion_type": "mass" if is_mass else "calcification",
        "descriptor": desc.name,
        "distribution": None if is_mass else distribution,
        "malignant": malignant,
        "density": density,
        "mm_per_pixel": fov / size,
    }
    return (np.clip(image, 0, 1) * 65535).round().astype(np.uint16), info


def phantom_labels(info: dict[str, Any]) -> dict[str, Any]:
    """Cache labels of a phantom described by ``info`` (class indices, as declared in ``LABELS``)."""
    mass = info["lesion_type"] == "mass"
    mal = int(info["malignant"])
    return {
        "pathology": mal,
        "lesion_type": 0 if mass else 1,
        "type_pathology": (0 if mass else 2) + mal,
        "margins": [lx.MARGIN_NAMES.index(info["descriptor"])] if mass else None,
        "calc_type": None if mass else lx.CALC_TYPE_NAMES.index(info["descriptor"]),
        "density": info["density"],
    }


def prepare_phantoms(
    out: str,
    num: int = 1000,
    size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    overwrite: bool = False,
) -> str:
    """Generate phantom lesion crops into a cache (``miram prepare phantoms``).

    Args:
        out: cache directory to write.
        num: number of crops.
        size: crop side in pixels; use the finest training scale (input size x largest factor).
        seed: dataset seed; the same seed always gives the same images and labels.
        val_fraction: share of phantoms in the validation split.
        test_fraction: share of phantoms in the test split.
        overwrite: rebuild from scratch instead of resuming.

    Returns:
        The cache directory.
    """
    from rich.progress import track

    if num < 1 or size < 16:
        raise ValueError(f"need num >= 1 and size >= 16, got num={num}, size={size}")
    writer = CacheWriter(out, "phantoms", overwrite=overwrite)
    writer.check_settings(  # phantoms are a pure function of these: a resumed run may keep earlier pixels
        {"num": num, "size": size, "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    )
    split_rng = np.random.default_rng([seed, 2**31])  # a stream no sample index uses
    u = split_rng.uniform(size=num)
    for i in track(range(num), description=f"phantoms -> {out}", transient=True):
        split = (
            "test" if u[i] < test_fraction else ("val" if u[i] < test_fraction + val_fraction else "train")
        )
        key = f"phantom_{seed}_{i:06d}"
        image, info = render_phantom(seed, i, size)
        record = CacheRecord(
            key, split, patient_id=key, labels=phantom_labels(info), source=f"phantom:{seed}:{i}", meta=info
        )
        writer.add(record, None if writer.has(key) else image)
    return str(writer.finalize(LABELS, {"phantom": {"seed": seed, "size": size, "num": num}}))
