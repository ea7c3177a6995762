"""Keras batches of a cache's images, decoded from its source per batch, optionally augmented.

The row order of a shuffled epoch is ``np.random.default_rng([seed, epoch]).permutation(rows)``, the order
``ArrayBatches`` gives arrays in RAM: training on cached activations visits the rows in the same order as
training on images, so the two can be compared step by step.
"""

from __future__ import annotations

import threading

import numpy as np

from bottleneck import _tf

# This module subclasses keras.utils.PyDataset, so it is only imported where Keras is needed anyway.
keras = _tf.keras()


class ImageBatches(keras.utils.PyDataset):
    """(pixels, label index[, row weight]) batches over ``rows`` (default: all) of one split of a
    ``CacheImages``; ``y`` holds the label index of every row of the split."""

    def __init__(
        self,
        images,
        split: str,
        y: np.ndarray,
        batch_size: int,
        *,
        rows=None,
        shuffle: bool,
        seed: int = 0,
        augment=None,
        class_weights: np.ndarray | None = None,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.split, self.y = images, split, np.asarray(y)
        self.rows = np.arange(images.n(split)) if rows is None else np.asarray(rows, np.int64)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, seed
        self.augment = augment
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self._lock = threading.Lock()
        self._epoch = 0
        self._plan()

    def _plan(self) -> None:
        rng = np.random.default_rng([self.seed, self._epoch])
        self._order = rng.permutation(self.rows) if self.shuffle else self.rows

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, i: int):
        with self._lock:
            sel = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.images.pixels(self.split, sel)
        if self.augment is not None:
            x = np.asarray(self.augment(x, training=True), np.float32)
        y = self.y[sel]
        if self.class_weights is None:
            return x, y
        return x, y, self.class_weights[y]

    def on_epoch_end(self) -> None:
        with self._lock:
            self._epoch += 1
            if self.shuffle:
                self._plan()


class ImageData:
    """The fine-tuning loop's view of ``ImageBatches``: ``epoch(e)`` (1-based) and ``batches()`` yield
    (pixels, label index, row weights | None), decoding one batch ahead in a thread."""

    def __init__(self, batches: ImageBatches):
        self.data = batches

    @property
    def steps(self) -> int:
        return len(self.data)

    @property
    def n_rows(self) -> int:
        return len(self.data.rows)

    def epoch(self, epoch: int):
        with self.data._lock:
            self.data._epoch = epoch - 1
            self.data._plan()
        return self._ahead()

    def batches(self):
        return self._ahead()

    def _ahead(self):
        from concurrent.futures import ThreadPoolExecutor

        n = len(self.data)
        with ThreadPoolExecutor(1, thread_name_prefix="batch") as pool:
            nxt = pool.submit(self.data.__getitem__, 0) if n else None
            for i in range(n):
                item = nxt.result()
                if i + 1 < n:
                    nxt = pool.submit(self.data.__getitem__, i + 1)
                x, y, *w = item
                yield x, y, (w[0] if w else None)
