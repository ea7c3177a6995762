"""Input pipeline: decode and resize images in worker threads, in order, a few batches ahead of compute."""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Decode threads' priority below the caller's, in nice steps (scripts/bench_extract.py --compare-decode-nice).
DECODE_NICE = 19


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
    load: Callable[[object], np.ndarray],
    groups,
    *,
    workers: int = 2,
    prefetch: int = 2,
    nice: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``np.stack`` of ``load(item)`` for each group (a sequence of items) of the iterable ``groups``,
    in order, decoding up to ``prefetch`` groups ahead in ``workers`` threads: the caller decides the batches
    (and may run one stream across chunk boundaries, so decoding never waits for a commit).

    The decode threads run ``nice`` (default ``DECODE_NICE``) steps below the caller's priority (Linux), so that
    the compute threads get the cores first and decoding fills the time they leave idle; an image that no thread
    has started when the caller needs it is decoded by the caller itself, at its own priority, so a pool starved
    by other busy processes slows a run to serial decoding at worst, never stalls it."""
    groups = iter(groups)
    with ThreadPoolExecutor(
        max_workers=max(1, workers),
        thread_name_prefix="decode",
        initializer=_lower_priority,
        initargs=(DECODE_NICE if nice is None else nice,),
    ) as pool:
        pending: deque = deque()

        def submit() -> bool:
            group = next(groups, None)
            if group is None:
                return False
            # One task per image, so a slow image does not hold up a whole worker's batch.
            pending.append((group, [pool.submit(load, it) for it in group]))
            return True

        while len(pending) <= prefetch and submit():
            pass
        try:
            while pending:
                group, futures = pending.popleft()
                # cancel() succeeds only for a task no thread has started: the caller decodes those itself before
                # it waits for the ones under way.
                mine = [load(it) if f.cancel() else None for it, f in zip(group, futures, strict=True)]
                batch = np.stack(
                    [f.result() if im is None else im for im, f in zip(mine, futures, strict=True)]
                )
                submit()
                yield batch
        finally:
            for _, futures in pending:  # stopped early (an error, or the caller left): drop what is queued
                for f in futures:
                    f.cancel()


def _lower_priority(steps: int) -> None:
    """Lower the calling thread's priority by ``steps`` nice levels (Linux, where each thread has its own nice
    value and raising it needs no privilege; elsewhere the call would reach the whole process, so nothing)."""
    if steps <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError:  # a sandbox that forbids it: decoding keeps the caller's priority
        pass
