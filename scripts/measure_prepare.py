"""``prepare`` speed and cache size per public collection, on the test trees (real CBIS-DDSM pixels written in
each collection's layout by ``tests/data/trees_<collection>.py``), measured on this machine.

For each collection: build a tree of ``--patients`` x 4 films (x 2 for mini-MIAS, a pair per woman), run
its ``miram prepare`` command with ``--workers`` processes, and print films/s (wall clock of ``prepare``
alone) and the cache's size per 1,000 films (pixels + masks + manifest). ``--shrink`` sets the films' size:
8 gives the test trees' ~570 x 360 px, 2 gives ~2,300 x 1,450 px, the size class of CMMD and of downscaled
full-field films.

Usage::

    .venv/bin/python scripts/measure_prepare.py --patients 25 --shrink 8
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "data"))  # the tree builders (and film_fakes, which they import)

from trees_cdd_cesm import build_cdd_cesm_tree  # noqa: E402
from trees_cmmd import build_cmmd_tree  # noqa: E402
from trees_embed import build_embed_tree  # noqa: E402
from trees_inbreast import build_inbreast_tree  # noqa: E402
from trees_mias import build_mias_tree  # noqa: E402
from trees_rsna import build_rsna_tree  # noqa: E402
from trees_vindr import build_vindr_tree  # noqa: E402

from miram.data.cache import Cache  # noqa: E402
from miram.data.collections.cdd_cesm import prepare_cdd_cesm  # noqa: E402
from miram.data.collections.cmmd import prepare_cmmd  # noqa: E402
from miram.data.collections.embed import prepare_embed  # noqa: E402
from miram.data.collections.inbreast import prepare_inbreast  # noqa: E402
from miram.data.collections.mias import prepare_mias  # noqa: E402
from miram.data.collections.rsna import prepare_rsna  # noqa: E402
from miram.data.collections.vindr import prepare_vindr  # noqa: E402

COLLECTIONS: dict[str, tuple[Callable[..., Path], Callable[..., Path]]] = {
    "vindr-mammo": (build_vindr_tree, prepare_vindr),
    "cmmd": (build_cmmd_tree, prepare_cmmd),
    "rsna": (build_rsna_tree, prepare_rsna),
    "inbreast": (build_inbreast_tree, prepare_inbreast),
    "embed": (build_embed_tree, prepare_embed),
    "mini-mias": (build_mias_tree, prepare_mias),
    "cdd-cesm": (build_cdd_cesm_tree, prepare_cdd_cesm),
}


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "journal" not in f.parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=25)
    parser.add_argument("--shrink", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=list(COLLECTIONS))
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    print(f"trees of {args.patients} patients x 4 films, shrink {args.shrink}, {args.workers} workers\n")
    print(
        "| collection | films cached | skipped | film size (px) | source MB | prepare s | films/s "
        "| cache MB per 1,000 films |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name in args.only:
        build, prepare = COLLECTIONS[name]
        with tempfile.TemporaryDirectory() as tmp:
            root, out = Path(tmp) / "download", Path(tmp) / "cache"
            kwargs: dict[str, Any] = {}
            if "shrink" in inspect.signature(build).parameters:
                kwargs["shrink"] = args.shrink
            elif args.shrink != 8:
                print(f"| {name} | (its builder writes shrink-8 films only) |")
                continue
            build(root, args.patients, **kwargs)
            source = size_of(root)
            start = time.perf_counter()
            prepare(root=str(root), out=str(out), workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
            cache = Cache(out)
            n = len(cache)
            shape = cache.image(0).shape
            skipped, per_1000 = cache.info["num_skipped"], size_of(out) / n * 1000 / 1e6
            print(
                f"| {name} | {n} | {skipped} | {shape[0]}x{shape[1]} | {source / 1e6:.1f} | "
                f"{seconds:.1f} | {n / seconds:.1f} | {per_1000:.0f} |"
            )
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
