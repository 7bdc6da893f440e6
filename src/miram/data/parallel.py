"""Run ``prepare`` jobs in worker processes with a progress bar, results as they finish.

Workers are started with ``forkserver`` (``spawn`` where unavailable): the parent may hold torch or a
threaded loader, which ``fork`` would copy in an unsafe state.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _progress(description: str, total: int):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def run_parallel(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    description: str = "prepare",
    progress: bool = True,
) -> Generator[tuple[T, R], None, None]:
    """Yield ``(item, fn(item))`` as jobs finish; at most ``2 × workers`` jobs are in flight.

    Args:
        fn: a picklable top-level function.
        items: the jobs (picklable).
        workers: processes; 0 or 1 runs in this process (tests, debugging).
        description: progress-bar label.
        progress: show a rich progress bar.

    Closing the generator early (e.g. on the first error under ``on_error=fail``) cancels pending jobs.
    """
    bar = _progress(description, len(items)) if progress and items else None
    task = bar.add_task(description, total=len(items)) if bar is not None else None
    if bar is not None:
        bar.start()
    try:
        if workers <= 1:
            for item in items:
                result = fn(item)
                if bar is not None and task is not None:
                    bar.advance(task)
                yield item, result
            return
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            pending: dict[Future[R], T] = {}
            queue = iter(items)
            try:
                while True:
                    for item in itertools.islice(queue, 2 * workers - len(pending)):
                        pending[pool.submit(fn, item)] = item
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        item = pending.pop(fut)
                        if bar is not None and task is not None:
                            bar.advance(task)
                        yield item, fut.result()
            finally:
                for fut in pending:
                    fut.cancel()
    finally:
        if bar is not None:
            bar.stop()
