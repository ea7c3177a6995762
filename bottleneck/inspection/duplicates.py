"""Exact duplicates (equal content hashes), near duplicates (cosine of L2-normalised features) and the candidate
pairs (each row's nearest neighbours) whose images ``pixel_check`` compares."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.errors import BottleneckError

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
    progress: Progress | None = None,
) -> Pairs:
    """Every pair of rows of ``X`` (N, D), unit-norm float32 (``normalized``), whose cosine is >= ``threshold``.

    Exact all-pairs search in row blocks: one block of rows against the rows after its start, so at most
    ``block_bytes`` of similarities exist at a time (never an N x N matrix) and each pair is computed once.
    More than ``MAX_PAIRS_PER_ROW`` pairs per row (at least 100 000 in all) stops the scan with one line: the
    threshold does not separate copies from ordinary neighbours in these features.
    """
    check_threshold(threshold)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    if n < 2:
        return Pairs.empty()
    block = int(max(16, min(n, block_bytes // (4 * n))))
    parts_a, parts_b, parts_s = [], [], []
    found, limit = 0, max(100_000, MAX_PAIRS_PER_ROW * n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = X[start:stop] @ X[start:].T  # (stop - start, n - start)
        # Keep j > i only: the block's own square holds each pair twice, and the diagonal.
        sims[np.tril_indices(stop - start)] = -np.inf
        i, j = np.nonzero(sims >= threshold)
        parts_a.append(i + start)
        parts_b.append(j + start)
        parts_s.append(sims[i, j])
        found += len(i)
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
    progress: Progress | None = None,
) -> Pairs:
    """Pairs of rows of ``X`` (N, D), unit-norm float32, worth comparing image to image: each row with its
    ``neighbours`` nearest rows of cosine >= ``floor``, and every pair of cosine >= ``threshold``; ``score`` is
    the cosine.

    The same block scan as ``near_duplicates`` (each pair computed once, never an N x N matrix). A pair is kept
    while it is among the ``neighbours`` best of one of its rows; each row's current k-th best similarity is a
    floor for its later pairs, so few pairs pass the comparison once the scan is under way. Exact: the result
    equals a brute-force top-k of every row (ties at the k-th place aside).
    """
    check_threshold(threshold)
    check_threshold(floor)
    check_neighbours(neighbours)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    if n < 2:
        return Pairs.empty()
    k = neighbours
    # Interleaved blocks (rows q, q + nb, q + 2 nb, ...): a cache lists its rows class by class, so each block is
    # a sample of every class and the k-th best similarities rise after the diagonal blocks, whatever the order.
    side = int(max(16, min(n, np.sqrt(block_bytes / 4))))
    nb = -(-n // side)
    # Row numbers as int32 while pairs are gathered and pruned (n < 2**31): the pairs and the pruning's sort keys are
    # most of the scan's memory beyond the features.
    blocks = [np.arange(q, n, nb, dtype=np.int32) for q in range(nb)]
    order = [(q, q) for q in range(nb)] + [(q, r) for q in range(nb) for r in range(q + 1, nb)]
    kth = np.full(n, floor, np.float32)  # a lower bound of each row's k-th best cosine so far
    a, b, s = np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    new_a, new_b, new_s, pending = [], [], [], 0
    budget = max(PRUNE_PAIRS, n * k)  # pairs gathered between two prunings
    limit = max(100_000, MAX_PAIRS_PER_ROW * n)
    total = n * (n - 1) / 2
    done = 0
    for step, (q, r) in enumerate(order):
        rq, rr = blocks[q], blocks[r]
        sims = X[rq] @ X[rr].T  # (|q|, |r|)
        # A pair can matter only if it beats the k-th best of one of its rows (or reaches the threshold).
        kr, kc = np.minimum(kth[rq], threshold), np.minimum(kth[rr], threshold)
        keep = sims >= kr[:, None]
        keep |= sims >= kc[None, :]
        if q == r:
            keep &= _upper(len(rq))  # each pair once, no self-pairs
        i, j = np.nonzero(keep)
        del keep
        new_a.append(rq[i])
        new_b.append(rr[j])
        new_s.append(sims[i, j])
        pending += len(i)
        if pending > budget or q == r or step == len(order) - 1:
            a, b, s = _top_pairs(
                np.concatenate([a, *new_a]), np.concatenate([b, *new_b]), np.concatenate([s, *new_s]),
                k, threshold, kth,
            )  # fmt: skip
            new_a, new_b, new_s, pending = [], [], [], 0
            if np.count_nonzero(s >= threshold) > limit:
                raise _too_many(limit, threshold, f"after {step + 1} of {len(order)} blocks")
        done += len(rq) * (len(rq) - 1) / 2 if q == r else len(rq) * len(rr)
        if progress:
            progress("near-duplicate candidates", int(n * done / total), n)
    a, b = np.minimum(a, b), np.maximum(a, b)
    o = np.lexsort((b, a))
    return Pairs(a[o].astype(np.int64), b[o].astype(np.int64), s[o].astype(np.float32))


@functools.lru_cache(maxsize=2)
def _upper(m: int) -> np.ndarray:
    """(m, m) bool: True above the diagonal."""
    return np.triu(np.ones((m, m), bool), 1)


def _top_pairs(a, b, s, k, threshold, kth):
    """The pairs among the ``k`` best of row ``a`` or of row ``b`` (or reaching ``threshold``); raises ``kth``
    (N,) in place to the k-th best cosine of each row with k pairs so far."""
    p = len(a)
    if not p:
        return a, b, s
    ends = np.concatenate([a, b])
    sc = np.concatenate([s, s])
    # One float sort: the row, then the cosine best first (1 - cosine in [0, 2], well inside one row's step).
    order = np.argsort(ends * 4.0 + (1.0 - sc.astype(np.float64)))
    e = ends[order]
    first = np.flatnonzero(np.concatenate([[True], e[1:] != e[:-1]]))
    sizes = np.diff(np.concatenate([first, [len(e)]]))
    rank = np.arange(len(e)) - np.repeat(first, sizes)
    top = np.zeros(len(e), bool)
    top[order[rank < k]] = True
    full = first[sizes >= k]
    kth[e[full]] = np.maximum(kth[e[full]], sc[order[full + k - 1]])
    keep = top[:p] | top[p:] | (s >= threshold)
    return a[keep], b[keep], s[keep]


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
