"""Reading feature arrays block by block: an on-disk split (zarr, h5, memmap) never has to fit in RAM."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bottleneck.callbacks import Progress  # noqa: F401  (re-exported for the heads)

# Blocks read from a store at a time when a whole split is not loaded: big enough to amortise chunk
# decompression, small enough to stay far below RAM.
BLOCK_BYTES = 64 << 20


def available_memory() -> int:
    """Bytes of RAM available now (Linux MemAvailable), or 2 GiB when that cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def nbytes(X) -> int:
    return int(np.prod(X.shape)) * np.dtype(X.dtype).itemsize


def to_memory(X) -> np.ndarray:
    """The whole array in RAM (reads a zarr / h5 / memmap array-like once)."""
    if isinstance(X, np.ndarray) and not isinstance(X, np.memmap):
        return X
    return np.asarray(X[:])


def block_rows_for(X, block_bytes: int = BLOCK_BYTES) -> int:
    row_bytes = max(1, nbytes(X) // max(1, int(X.shape[0])))
    rows = max(1, block_bytes // row_bytes)
    chunks = getattr(X, "chunks", None)
    if chunks and chunks[0]:
        # Whole stored chunks: a block that cuts a chunk would decompress it twice.
        rows = max(int(chunks[0]), rows // int(chunks[0]) * int(chunks[0]))
    return int(rows)


def iter_blocks(
    X, rows: np.ndarray | None = None, block_rows: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (row indices, features of those rows) in stored order, reading contiguous slabs.

    ``rows`` (sorted, unique) restricts to a subset; each slab read spans at most ``block_rows`` selected rows.
    """
    n = int(X.shape[0])
    block_rows = block_rows or block_rows_for(X)
    if rows is None:
        for a in range(0, n, block_rows):
            b = min(n, a + block_rows)
            yield np.arange(a, b), np.asarray(X[a:b])
        return
    for i in range(0, len(rows), block_rows):
        sel = rows[i : i + block_rows]
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        yield sel, np.asarray(X[lo:hi])[sel - lo]


def take_rows(X, rows: np.ndarray) -> np.ndarray:
    """The features of ``rows`` (sorted, unique) of an array-like, read in contiguous slabs."""
    return np.concatenate([b for _, b in iter_blocks(X, np.asarray(rows))])
