"""Exact duplicates (equal content hashes) and near duplicates (cosine of L2-normalised features) of rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.errors import BottleneckError

# Cosine of L2-normalised features at or above which two images count as near duplicates: the lowest threshold at
# which at most 2 % of the flagged train-test pairs were not planted copies, measured on Fashion-MNIST with 50 train
# images planted into test (scripts/bench_inspect.py planted; README "Inspect"), EfficientNet-Lite0 at its default
# 224 px (0.96 at 128 px). Copies that JPEG q75 or a 10 % resize moved further stay below it (see the README).
DEFAULT_THRESHOLD = 0.97
# Similarities held at once while scanning: one block of rows against all later rows (float32).
BLOCK_BYTES = 192 << 20
# Pairs per image beyond which the threshold is too low for the features (every pair of a class would follow).
MAX_PAIRS_PER_ROW = 20


@dataclass
class Pairs:
    """Pairs of global rows ``a`` < ``b`` (int64, (P,)) with their ``score`` (float32, (P,)): cosine for near
    duplicates, 1.0 for exact ones."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def take(self, keep) -> Pairs:
        return Pairs(self.a[keep], self.b[keep], self.score[keep])


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
            raise BottleneckError(
                f"more than {limit} pairs of images reach cosine threshold={threshold} (after {stop} of {n} rows): "
                "it does not separate copies from ordinary neighbours in these features; raise it, e.g. "
                f"threshold={min(0.999, round(1 - (1 - threshold) / 2, 4))}."
            )
        if progress:
            progress("near duplicates", stop, n)
    return Pairs(
        np.concatenate(parts_a).astype(np.int64),
        np.concatenate(parts_b).astype(np.int64),
        np.concatenate(parts_s).astype(np.float32),
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
