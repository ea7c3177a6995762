"""bottleneck.inference.pipeline: ordered batches with fixed boundaries, bounded prefetch, worker errors raised."""

import threading
import time

import numpy as np
import pytest

from bottleneck.inference.pipeline import iter_batches


def test_batches_keep_the_order_and_fixed_boundaries():
    def load(i):
        time.sleep(0.002 * ((7 * i) % 5))  # finish out of order
        return np.full((2,), i, np.int64)

    out = list(iter_batches(load, list(range(23)), 5, workers=4))
    assert [start for start, _ in out] == [0, 5, 10, 15, 20]
    assert [len(b) for _, b in out] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b[:, 0] for _, b in out]), np.arange(23))
    assert list(iter_batches(load, [], 5)) == []


def test_prefetch_is_bounded():
    loaded, early = [], []
    lock = threading.Lock()
    taken = [0]  # batches the caller has taken

    def load(i):
        with lock:
            loaded.append(i)
            # With one batch taken, at most prefetch + 1 batches may be submitted behind it: 40 items.
            if taken[0] == 1 and i >= 10 * (1 + 2 + 1):
                early.append(i)
        return np.zeros(1)

    batches = iter_batches(load, list(range(100)), 10, workers=1, prefetch=2)
    next(batches)
    taken[0] = 1
    deadline = time.time() + 30
    while len(loaded) < 40 and time.time() < deadline:
        time.sleep(0.001)  # polling the state: the workers run ahead as far as they may
    assert sorted(loaded[:40]) == list(range(40)) and early == []
    taken[0] = 2
    rest = list(batches)
    assert [start for start, _ in rest] == list(range(10, 100, 10)) and early == []


def test_an_error_in_a_worker_reaches_the_caller():
    def load(i):
        if i == 13:
            raise ValueError("image 13 is broken")
        return np.zeros(1)

    batches = iter_batches(load, list(range(30)), 5, workers=3)
    assert next(batches)[0] == 0 and next(batches)[0] == 5
    with pytest.raises(ValueError, match="image 13 is broken"):
        list(batches)
