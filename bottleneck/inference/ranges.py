"""One range of rows, computed the same way in this process and on a cluster worker.

A local run is a cluster of one in shape: both fill a range with ``compute_range`` from batches grouped by
``batch_groups``, so a fix to either lands in both, and the same engine gives the same bits either way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bottleneck.cache.reuse import Donors
from bottleneck.errors import CacheError


def batch_groups(ranges, batch_size: int) -> Iterator[list]:
    """The items at each range's ``todo`` positions, ``batch_size`` at a time, range after range: how images are
    grouped into engine batches, the same in one process and on a cluster (so a resumed or distributed run groups
    them as an uninterrupted one does). ``ranges``: (items, todo positions) pairs."""
    return (
        [items[i] for i in todo[b : b + batch_size]]
        for items, todo in ranges
        for b in range(0, len(todo), batch_size)
    )


def compute_range(
    engine,
    donors: Donors,
    items,
    todo: list[int],
    batches: Iterator[np.ndarray],
    out: np.ndarray,
    on_batch=None,
) -> None:
    """Fill ``out`` (len(items), *feature_shape) with the rows of ``items``: the rows donor caches hold are copied,
    the ``todo`` positions are computed by ``engine`` from ``batches`` (the decoded groups of ``batch_groups``, in
    order). ``on_batch(rows computed so far)`` after each batch."""
    unknown = donors.fill(out, [it.hash for it in items])
    if not set(unknown) <= set(todo):  # read fine when the plan was made, unreadable now
        raise CacheError(
            "a cache whose rows this run reuses became unreadable while it ran; run the same command again "
            "(rows committed so far are kept)."
        )
    done = 0
    while done < len(todo):
        batch = next(batches)
        out[todo[done : done + len(batch)]] = engine(batch)
        done += len(batch)
        if on_batch is not None:
            on_batch(done)
