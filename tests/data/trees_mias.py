"""Builders of mini-MIAS trees: ``mdb###.pgm`` (8-bit binary PGM, pixels from :func:`film_fakes.real_film`
at their own size, not 1024 × 1024) and ``Info.txt`` with the header and note lines copies carry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from film_fakes import real_film
from PIL import Image

HEADER = "REFNUM BG CLASS SEVERITY X Y RADIUS "
NOTES = """MIAS MINI-DATABASE: films, tissue, class, severity, and the centre and radius of abnormalities.

NOTES
=====
1) The list is arranged in pairs of films, where each pair represents the left (even filename numbers) and
   right mammograms (odd filename numbers) of a single patient.
3) Coordinate system origin is the bottom-left corner.
"""


def film_pixels(number: int, case: int = 0, shrink: int = 8) -> np.ndarray:
    """8-bit pixels for film ``mdb<number>``: a right MLO for an odd number, a left MLO for an even one."""
    view = "rmlo" if number % 2 else "lmlo"
    return (real_film(view, case, shrink) >> 8).astype(np.uint8)


def write_pgm(root: Path, number: int, case: int = 0, shrink: int = 8, name: str | None = None) -> Path:
    """``<root>/mdb<number>.pgm`` (binary P5) of :func:`film_pixels`."""
    path = root / (name or f"mdb{number:03d}.pgm")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(film_pixels(number, case, shrink)).save(path, format="PPM")
    return path


def write_info(path: Path, lines: Sequence[str], notes: bool = True) -> Path:
    """``Info.txt``: the header line, the data ``lines`` as given, then (``notes``) README-style notes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *lines, "", NOTES if notes else ""]))
    return path


def build_mias_tree(root: Path, n_patients: int, shrink: int = 8) -> Path:
    """A valid mini-MIAS tree of ``n_patients`` women × 2 films (MIAS has one MLO per breast: a pair per
    woman, ``mdb001``/``mdb002`` for the first), one ``Info.txt`` line per film, all under ``root``.

    Films cycle NORM; CIRC B with a circle; CALC M with a circle; CALC B without coordinates; SPIC M with a
    circle; tissue cycles F / G / D.

    Returns:
        the ``Info.txt`` path.
    """
    lines = []
    for i in range(2 * n_patients):
        number = i + 1
        path = write_pgm(root, number, case=(i // 2) % 2, shrink=shrink)
        height, width = film_pixels(number, (i // 2) % 2, shrink).shape
        tissue = "FGD"[i % 3]
        x, y, r = width // 2, height // 2, 20
        kind = i % 5
        tails = ("NORM", f"CIRC B {x} {y} {r}", f"CALC M {x} {y} {r // 2}", "CALC B", f"SPIC M {x} {y} {r}")
        tail = tails[kind]
        lines.append(f"{path.stem} {tissue} {tail}")
    return write_info(root / "Info.txt", lines)
