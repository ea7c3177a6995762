"""Input pipeline: decode and resize images in worker threads, in order, a few batches ahead of compute."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def iter_batches(
    load: Callable[[object], np.ndarray],
    items: Sequence,
    batch_size: int,
    *,
    workers: int = 2,
    prefetch: int = 2,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, batch)`` over ``items`` in order; batch is ``np.stack`` of ``load(item)``.

    Batches have fixed boundaries (multiples of ``batch_size`` from the first item), so a resumed run
    groups images exactly as an uninterrupted one. Decoding (PIL releases the GIL) runs in ``workers``
    threads while the caller computes; at most ``prefetch`` batches wait in memory.
    """
    starts = range(0, len(items), batch_size)
    groups = (items[s : s + batch_size] for s in starts)
    yield from zip(starts, iter_groups(load, groups, workers=workers, prefetch=prefetch), strict=True)


def iter_groups(
    load: Callable[[object], np.ndarray], groups, *, workers: int = 2, prefetch: int = 2
) -> Iterator[np.ndarray]:
    """Yield ``np.stack`` of ``load(item)`` for each group (a sequence of items) of the iterable ``groups``,
    in order, decoding up to ``prefetch`` groups ahead in ``workers`` threads: the caller decides the batches
    (and may run one stream across chunk boundaries, so decoding never waits for a commit)."""
    groups = iter(groups)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()

        def submit() -> bool:
            group = next(groups, None)
            if group is None:
                return False
            # One task per image, so a slow image does not hold up a whole worker's batch.
            pending.append([pool.submit(load, it) for it in group])
            return True

        while len(pending) <= prefetch and submit():
            pass
        try:
            while pending:
                futures = pending.popleft()
                batch = np.stack([f.result() for f in futures])
                submit()
                yield batch
        finally:
            for futures in pending:  # stopped early (an error, or the caller left): drop what is queued
                for f in futures:
                    f.cancel()
