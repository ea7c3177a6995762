"""Exact duplicates (equal content hashes), near duplicates (cosine of L2-normalised features) and the candidate
pairs (each row's nearest neighbours) whose images ``pixel_check`` compares."""

from __future__ import annotations

import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bottleneck._tf import cpu_count
from bottleneck.callbacks import Progress
from bottleneck.errors import BottleneckError
from bottleneck.inspection.cosine_bound import BoundedRows, exact_cosines

# Cosine of L2-normalised features at or above which two images count as near duplicates: the lowest threshold at
# which at most 2 % of the flagged train-test pairs were not planted copies, measured on Fashion-MNIST with 50 train
# images planted into test (scripts/bench_inspect.py planted; README "Inspect"), EfficientNet-Lite0 at its default
# 224 px (0.96 at 128 px). Copies that JPEG q75 or a 10 % resize moved further stay below it (see the README).
DEFAULT_THRESHOLD = 0.97
# Candidate pairs for the pixel check: each row's NEIGHBOURS nearest rows with cosine >= FLOOR. A JPEG q75 or
# +-10 % resized copy of a 28 px Fashion-MNIST image was among its original's 20 nearest of all 60 000 train images
# for 98 % of 600 copies (5 nearest: 95 %), at cosine >= 0.77 (scripts/bench_inspect.py; README "Inspect").
NEIGHBOURS = 20
FLOOR = 0.7
# Similarities held at once while scanning: one block of rows against all later rows (float32).
BLOCK_BYTES = 192 << 20
# Pairs per image beyond which the threshold is too low for the features (every pair of a class would follow).
MAX_PAIRS_PER_ROW = 20
# Candidate pairs gathered at least before they are pruned to each row's nearest neighbours.
PRUNE_PAIRS = 1 << 20
# Rows of a block one worker multiplies and compares at a time: their similarities (ROWS_AT_ONCE x block side
# float32, about 7 MB) stay in the processor's cache between the product and the comparisons.
ROWS_AT_ONCE = 256
# With the bound (cosine_bound), each row keeps WIDEN x neighbours pairs by the bound before the exact re-rank:
# 4 held every exact nearest-20 pair of 1 500 Fashion-MNIST rows checked at 256 dimensions (2: 0.9955).
WIDEN = 4


@dataclass
class Pairs:
    """Pairs of global rows ``a`` < ``b`` (int64, (P,)) with their ``score`` (float32, (P,)): cosine for near
    duplicates, 1.0 for exact ones; ``pixel`` (float32, (P,)) the difference of their 8 x 8 grey copies (RMS,
    grey levels) where the images were compared, or None."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    pixel: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.a)

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def take(self, keep) -> Pairs:
        return Pairs(
            self.a[keep], self.b[keep], self.score[keep], None if self.pixel is None else self.pixel[keep]
        )


def exact_duplicates(hashes: np.ndarray) -> Pairs:
    """Rows with equal content hashes (N,): each row of a group paired with the group's first row, so dropping
    every ``b`` keeps exactly one copy of each image."""
    hashes = np.asarray(hashes)
    if len(hashes) < 2:
        return Pairs.empty()
    order = np.argsort(hashes, kind="stable")  # stable: the first of a group is its lowest row
    h = hashes[order]
    starts = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    group = np.cumsum(np.isin(np.arange(len(h)), starts)) - 1
    first = order[starts][group]
    dup = order != first
    a, b = first[dup], order[dup]
    o = np.lexsort((b, a))
    return Pairs(a[o].astype(np.int64), b[o].astype(np.int64), np.ones(len(o), np.float32))


def normalized(X: np.ndarray) -> np.ndarray:
    """Rows of X (N, ...) flattened and scaled to unit L2 norm, float32 (all-zero rows stay zero)."""
    X = np.asarray(X, np.float32).reshape(len(X), -1)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def near_duplicates(
    X: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    block_bytes: int = BLOCK_BYTES,
    bounded: BoundedRows | None = None,
    progress: Progress | None = None,
) -> Pairs:
    """Every pair of rows of ``X`` (N, D), unit-norm float32 (``normalized``), whose cosine is >= ``threshold``.

    Exact all-pairs search in row blocks: one block of rows against the rows after its start, so at most
    ``block_bytes`` of similarities exist at a time (never an N x N matrix) and each pair is computed once.
    With ``bounded`` (``cosine_bound.bounded_rows_for``: large caches) the blocks multiply the bound's few
    dimensions, and only the pairs whose bound reaches the threshold get their exact cosine: the same pairs,
    since the bound is never below a cosine. More than ``MAX_PAIRS_PER_ROW`` pairs per row (at least 100 000 in
    all) stops the scan with one line: the threshold does not separate copies from ordinary neighbours in these
    features.
    """
    check_threshold(threshold)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    if n < 2:
        return Pairs.empty()
    Y = X if bounded is None else bounded.rows
    block = int(max(16, min(n, block_bytes // (4 * n))))
    parts_a, parts_b, parts_s = [], [], []
    found, limit = 0, max(100_000, MAX_PAIRS_PER_ROW * n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = Y[start:stop] @ Y[start:].T  # (stop - start, n - start)
        # Keep j > i only: the block's own square holds each pair twice, and the diagonal.
        sims[np.tril_indices(stop - start)] = -np.inf
        i, j = np.nonzero(sims >= threshold)
        a, b = i + start, j + start
        if bounded is None:
            score = sims[i, j]
        else:
            score = exact_cosines(X, a, b)
            keep = score >= threshold
            a, b, score = a[keep], b[keep], score[keep]
        parts_a.append(a)
        parts_b.append(b)
        parts_s.append(score)
        found += len(a)
        if found > limit:
            raise _too_many(limit, threshold, f"after {stop} of {n} rows")
        if progress:
            progress("near duplicates", stop, n)
    return Pairs(
        np.concatenate(parts_a).astype(np.int64),
        np.concatenate(parts_b).astype(np.int64),
        np.concatenate(parts_s).astype(np.float32),
    )


def candidate_pairs(
    X: np.ndarray,
    *,
    neighbours: int = NEIGHBOURS,
    floor: float = FLOOR,
    threshold: float = DEFAULT_THRESHOLD,
    block_bytes: int = BLOCK_BYTES,
    bounded: BoundedRows | None = None,
    progress: Progress | None = None,
) -> Pairs:
    """Pairs of rows of ``X`` (N, D), unit-norm float32, worth comparing image to image: each row with its
    ``neighbours`` nearest rows of cosine >= ``floor``, and every pair of cosine >= ``threshold``; ``score`` is
    the cosine.

    A block scan like ``near_duplicates`` (each pair computed once, never an N x N matrix). A pair is kept while
    it is among the ``neighbours`` best of one of its rows; each row's current k-th best similarity is a floor for
    its later pairs, so few pairs pass the comparison once the scan is under way. Without ``bounded`` it is exact:
    the result equals a brute-force top-k of every row (ties at the k-th place aside). With ``bounded``
    (``cosine_bound.bounded_rows_for``: large caches) the scan ranks by the bound through fewer dimensions, keeps
    each row's ``WIDEN`` x ``neighbours`` best, and re-ranks those by their exact cosines: every pair reaching
    ``threshold`` is still found (the bound never falls below a cosine); a nearest neighbour is missed only if
    it is not among the widened best by the bound.
    """
    check_threshold(threshold)
    check_threshold(floor)
    check_neighbours(neighbours)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    if n < 2:
        return Pairs.empty()
    limit = max(100_000, MAX_PAIRS_PER_ROW * n)
    if bounded is None:
        a, b, s = _scan(X, neighbours, floor, threshold, block_bytes, limit, progress)
    else:
        # The bound over-states cosines, so its count of pairs reaching the threshold only guards memory here;
        # the exact count is checked below.
        a, b, _ = _scan(
            bounded.rows, WIDEN * neighbours, floor, threshold, block_bytes, WIDEN * limit, progress
        )
        s = exact_cosines(X, a, b)
        keep = s >= floor
        a, b, s = _top_pairs(a[keep], b[keep], s[keep], neighbours, threshold, np.full(n, floor, np.float32))
        if np.count_nonzero(s >= threshold) > limit:
            raise _too_many(limit, threshold, "after the whole scan")
    a, b = np.minimum(a, b), np.maximum(a, b)
    o = np.lexsort((b, a))
    return Pairs(a[o].astype(np.int64), b[o].astype(np.int64), s[o].astype(np.float32))


def _scan(Y, k, floor, threshold, block_bytes, limit, progress):
    """(a, b, s) int32, int32, float32: the pairs of rows of ``Y`` among the ``k`` best dot products of one of
    their rows (at least ``floor``) or reaching ``threshold``."""
    from threadpoolctl import threadpool_limits

    n = len(Y)
    # Interleaved blocks (rows q, q + nb, q + 2 nb, ...): a cache lists its rows class by class, so each block is
    # a sample of every class and the k-th best similarities rise after the diagonal blocks, whatever the order.
    side = int(max(16, min(n, np.sqrt(block_bytes / 4))))
    nb = -(-n // side)
    # Row numbers as int32 while pairs are gathered and pruned (n < 2**31): the pairs are most of the scan's
    # memory beyond the features.
    blocks = [np.arange(q, n, nb, dtype=np.int32) for q in range(nb)]
    order = [(q, q) for q in range(nb)] + [(q, r) for q in range(nb) for r in range(q + 1, nb)]
    kth = np.full(n, floor, np.float32)  # a lower bound of each row's k-th best so far
    a, b, s = np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    new, pending = [], 0
    budget = max(PRUNE_PAIRS, n * k)  # pairs gathered between two prunings
    total, done = n * (n - 1) / 2, 0
    # Each worker multiplies and compares its own rows with one BLAS thread: NumPy's comparisons and nonzero run
    # on one core, so splitting the rows keeps every core busy (the bound's thin products gain the most).
    workers = max(1, cpu_count())
    with (
        threadpool_limits(1, user_api="blas"),
        ThreadPoolExecutor(workers, thread_name_prefix="scan") as pool,
    ):
        for step, (q, r) in enumerate(order):
            rq, rr = blocks[q], blocks[r]
            right = np.ascontiguousarray(Y[rr].T)
            # A pair can matter only if it beats the k-th best of one of its rows (or reaches the threshold).
            kr, kc = np.minimum(kth[rq], threshold), np.minimum(kth[rr], threshold)
            upper = _upper(len(rq)) if q == r else None
            parts = [
                pool.submit(_pairs_of_rows, Y, rq, rr, right, kr, kc, upper, start)
                for start in range(0, len(rq), ROWS_AT_ONCE)
            ]
            for part in parts:
                new.append(part.result())
                pending += len(new[-1][0])
            # Pruned when the pairs pile up, and once after the diagonal blocks: those blocks share no rows, so
            # a pruning between two of them would raise no floor the next one uses.
            if pending > budget or step == nb - 1 or step == len(order) - 1:
                a, b, s = _top_pairs(
                    np.concatenate([a, *(p[0] for p in new)]),
                    np.concatenate([b, *(p[1] for p in new)]),
                    np.concatenate([s, *(p[2] for p in new)]),
                    k, threshold, kth,
                )  # fmt: skip
                new, pending = [], 0
                if np.count_nonzero(s >= threshold) > limit:
                    raise _too_many(limit, threshold, f"after {step + 1} of {len(order)} blocks")
            done += len(rq) * (len(rq) - 1) / 2 if q == r else len(rq) * len(rr)
            if progress:
                progress("near-duplicate candidates", int(n * done / total), n)
    return a, b, s


def _pairs_of_rows(Y, rq, rr, right, kr, kc, upper, start):
    """Rows ``start`` .. ``start + ROWS_AT_ONCE`` of block ``rq`` against block ``rr`` (``right``: its rows of
    ``Y``, transposed): (a, b, s) of the pairs reaching the row's or the column's floor (``kr``, ``kc``)."""
    stop = start + ROWS_AT_ONCE
    sims = Y[rq[start:stop]] @ right
    keep = sims >= kr[start:stop, None]
    keep |= sims >= kc[None, :]
    if upper is not None:
        keep &= upper[start:stop]  # each pair once, no self-pairs
    i, j = np.nonzero(keep)
    return rq[start:stop][i], rr[j], sims[i, j]


@functools.lru_cache(maxsize=2)
def _upper(m: int) -> np.ndarray:
    """(m, m) bool: True above the diagonal."""
    return np.triu(np.ones((m, m), bool), 1)


def _top_pairs(a, b, s, k, threshold, kth):
    """The pairs among the ``k`` best of row ``a`` or of row ``b`` (ties at the k-th place kept) or reaching
    ``threshold``; raises ``kth`` (N,) in place to the k-th best score of each row with k pairs so far."""
    if not len(a):
        return a, b, s
    # One sort of 64-bit keys, the row above the score's bits ordered best first: NumPy sorts plain integers
    # with SIMD several times faster than an argsort, and only the k-th best of each row is needed, not an order.
    p = len(a)
    key = np.empty(2 * p, np.uint64)
    halves = key.view(np.uint32).reshape(-1, 2)
    low, high = (0, 1) if sys.byteorder == "little" else (1, 0)
    halves[:p, high], halves[p:, high] = a, b
    halves[:p, low] = halves[p:, low] = _best_first(s)
    key.sort()
    e = halves[:, high]
    first = np.flatnonzero(np.concatenate([[True], e[1:] != e[:-1]]))
    sizes = np.diff(np.concatenate([first, [len(e)]]))
    full = first[sizes >= k]
    rows = e[full].astype(np.int64)
    kth[rows] = np.maximum(kth[rows], _from_best_first(halves[full + k - 1, low]))
    keep = (s >= kth[a]) | (s >= kth[b]) | (s >= threshold)
    return a[keep], b[keep], s[keep]


def _best_first(s: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 scores, ascending as the scores descend: the IEEE bits made monotone (negative
    numbers' magnitude bits flipped), then offset to unsigned and inverted."""
    i = np.ascontiguousarray(s, np.float32).view(np.int32)
    monotone = i ^ ((i >> 31) & 0x7FFFFFFF)
    return ~(monotone.view(np.uint32) ^ np.uint32(0x80000000))


def _from_best_first(key: np.ndarray) -> np.ndarray:
    """The float32 scores of ``_best_first`` keys (each step of it undone: the bit flip is its own inverse)."""
    monotone = (~np.asarray(key, np.uint32) ^ np.uint32(0x80000000)).view(np.int32)
    return (monotone ^ ((monotone >> 31) & 0x7FFFFFFF)).view(np.float32)


def _too_many(limit: int, threshold: float, where: str) -> BottleneckError:
    return BottleneckError(
        f"more than {limit} pairs of images reach cosine threshold={threshold} ({where}): "
        "it does not separate copies from ordinary neighbours in these features; raise it, e.g. "
        f"threshold={min(0.999, round(1 - (1 - threshold) / 2, 4))}."
    )


def check_neighbours(neighbours) -> None:
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
        raise BottleneckError(
            f"neighbours={neighbours!r} is not allowed; pass an integer >= 1, e.g. {NEIGHBOURS}."
        )


def check_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise BottleneckError(
            f"threshold={threshold!r} is not allowed; pass a cosine similarity in (0, 1], e.g. {DEFAULT_THRESHOLD}."
        )


def without(pairs: Pairs, other: Pairs) -> Pairs:
    """``pairs`` minus the pairs of rows that ``other`` (exact duplicates: each copy paired with its group's
    first row) puts in one group."""
    if not len(pairs) or not len(other):
        return pairs
    n = int(max(pairs.b.max(), other.b.max())) + 1
    root = np.arange(n)
    root[other.b] = other.a
    return pairs.take(root[pairs.a] != root[pairs.b])
