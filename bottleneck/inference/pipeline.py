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
    n = len(items)
    if n == 0:
        return
    starts = range(0, n, batch_size)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()

        def submit(start):
            chunk = items[start : start + batch_size]
            # One task per image, so a slow image does not hold up a whole worker's batch.
            pending.append((start, [pool.submit(load, it) for it in chunk]))

        it = iter(starts)
        for start in it:
            submit(start)
            if len(pending) > prefetch:
                break
        while pending:
            start, futures = pending.popleft()
            batch = np.stack([f.result() for f in futures])
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            yield start, batch
