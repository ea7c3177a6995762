"""bottleneck.inference.pipeline: ordered batches with fixed boundaries, bounded prefetch, worker errors raised,
decode threads at a low priority and a caller that decodes what they have not started."""

import os
import sys
import threading
import time

import numpy as np
import pytest

from bottleneck.inference import pipeline
from bottleneck.inference.pipeline import iter_batches, iter_groups


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


def test_the_caller_decodes_what_no_thread_has_started_so_a_starved_pool_cannot_stall_it():
    """A pool whose thread is held (here by a gate; in life by other busy processes, since decode threads run at a
    low priority) delays a batch only by the image it holds: the caller decodes every image not yet started."""
    n = 7
    release = threading.Event()
    by_caller = []
    caller = threading.get_ident()
    lock = threading.Lock()

    def load(i):
        if threading.get_ident() != caller:
            release.wait(timeout=2)  # held until the caller has done the rest (2 s per image without stealing)
        else:
            with lock:
                by_caller.append(i)
                if len(by_caller) == n - 1:
                    release.set()
        return np.full((1,), i)

    start = time.perf_counter()
    out = list(iter_groups(load, [list(range(n)), [n]], workers=1))
    assert [b[:, 0].tolist() for b in out] == [list(range(n)), [n]]
    assert len(by_caller) >= n - 1 and len(set(by_caller)) == len(by_caller)  # each image decoded once
    assert time.perf_counter() - start < 1.5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
@pytest.mark.parametrize("nice", [None, 0, 5])
def test_decode_threads_run_below_the_callers_priority(nice):
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = set()

    def load(i):
        if threading.current_thread().name.startswith("decode"):
            seen.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return np.zeros(1)

    list(iter_groups(load, [list(range(i, i + 4)) for i in range(0, 40, 4)], workers=2, nice=nice))
    steps = pipeline.DECODE_NICE if nice is None else nice
    assert seen == {min(19, base + steps)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller's own is untouched
