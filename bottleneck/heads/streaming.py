"""Batches for Keras from an on-disk array (zarr / h5 / memmap) that may not fit in RAM.

Rows of a cache are stored sorted by class, so batches of consecutive rows would each hold one class. A
true per-row shuffle would decompress a whole stored chunk per row. The compromise, as in tf.data's
shuffle buffer: each epoch visits the stored blocks in a random order, loads a window of several blocks,
shuffles the rows of the window and cuts it into batches. The window is sized in bytes, so memory stays
bounded whatever the cache size. An array already in RAM gets a true per-row shuffle instead.

Both orders come from np.random.default_rng((seed, epoch)), never from a global generator, so training is
repeatable without reseeding the process.
"""

from __future__ import annotations

import threading

import numpy as np

from bottleneck import _tf
from bottleneck.heads.feature_blocks import block_rows_for

# This module subclasses keras.utils.PyDataset, so it is only imported where Keras is needed anyway.
keras = _tf.keras()

WINDOW_BYTES = 256 << 20


class ArrayBatches(keras.utils.PyDataset):
    """(features, label index) batches over ``rows`` of an array-like ``X``.

    ``y`` holds label indices for every row of X (N,); ``rows`` are the sorted rows to use. With ``shuffle``
    the order changes every epoch (seeded by ``seed`` and the epoch number); without it, rows go in stored
    order (validation, prediction). A NumPy array in RAM (not a memmap) is permuted row by row each epoch
    (indexing it costs no decompression); other arrays are shuffled window by window as above.

    With ``class_weights`` (one weight per label index), batches are (features, labels, row weights), so
    Keras weighs the loss of training and validation batches alike.
    """

    def __init__(
        self,
        X,
        y: np.ndarray,
        rows: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        window_bytes: int = WINDOW_BYTES,
        block_rows: int | None = None,
        class_weights: np.ndarray | None = None,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        self.X, self.y = X, y
        self.rows = np.asarray(rows, np.int64)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, seed
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.in_ram = isinstance(X, np.ndarray) and not isinstance(X, np.memmap)
        self.block_rows = block_rows or block_rows_for(X, window_bytes // 8)
        row_bytes = max(1, int(np.prod(X.shape[1:])) * np.dtype(X.dtype).itemsize)
        self.blocks_per_window = max(1, window_bytes // (self.block_rows * row_bytes))
        # Rows grouped by stored block: the unit of reading.
        block_of = self.rows // self.block_rows
        self._block_ids, starts = np.unique(block_of, return_index=True)
        self._block_rows = np.split(self.rows, starts[1:])
        self._lock = threading.Lock()
        self._epoch = 0
        self._plan()

    def _plan(self) -> None:
        """Decide this epoch's row order: a permutation of the rows in RAM, or windows (lists of block
        positions) and the row order within each."""
        rng = np.random.default_rng([self.seed, self._epoch])
        if self.in_ram:
            self._order = rng.permutation(self.rows) if self.shuffle else self.rows
            return
        nb = len(self._block_ids)
        order = rng.permutation(nb) if self.shuffle else np.arange(nb)
        self._windows = [
            np.sort(order[i : i + self.blocks_per_window]) for i in range(0, nb, self.blocks_per_window)
        ]
        sizes = [sum(len(self._block_rows[b]) for b in w) for w in self._windows]
        self._window_start = np.concatenate([[0], np.cumsum(sizes)])
        self._perm = [rng.permutation(s) if self.shuffle else np.arange(s) for s in sizes]
        self._loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, label indices) of window ``w`` in this epoch's shuffled order; the last two are kept."""
        if w not in self._loaded:
            xs, ys = [], []
            for b in self._windows[w]:
                rows = self._block_rows[b]
                lo = int(self._block_ids[b]) * self.block_rows
                slab = np.asarray(self.X[lo : int(rows[-1]) + 1])
                xs.append(slab[rows - lo])
                ys.append(self.y[rows])
            x, y = np.concatenate(xs), np.concatenate(ys)
            perm = self._perm[w]
            if len(self._loaded) >= 2:
                self._loaded.pop(min(self._loaded))
            self._loaded[w] = (x[perm], y[perm])
        return self._loaded[w]

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, i: int):
        x, y = self._batch(i)
        if self.class_weights is None:
            return x, y
        return x, y, self.class_weights[y]

    def _batch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a = i * self.batch_size
        b = min(a + self.batch_size, len(self.rows))
        if self.in_ram:
            with self._lock:
                sel = self._order[a:b]
            return self.X[sel].astype(np.float32, copy=False), self.y[sel]
        with self._lock:
            parts_x, parts_y = [], []
            w = int(np.searchsorted(self._window_start, a, side="right") - 1)
            while a < b:
                x, y = self._window(w)
                lo = a - self._window_start[w]
                take = min(b - a, len(x) - lo)
                parts_x.append(x[lo : lo + take])
                parts_y.append(y[lo : lo + take])
                a += take
                w += 1
        x = parts_x[0] if len(parts_x) == 1 else np.concatenate(parts_x)
        y = parts_y[0] if len(parts_y) == 1 else np.concatenate(parts_y)
        return x.astype(np.float32, copy=False), y

    def on_epoch_end(self) -> None:
        with self._lock:
            self._epoch += 1
            if self.shuffle:
                self._plan()
