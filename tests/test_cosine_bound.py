"""The near-duplicate scans of large caches through fewer dimensions (``inspection.cosine_bound``): the bound is
never below a cosine, the threshold scan finds exactly the pairs of the exact scan, and the neighbour scan holds
the exact scan's nearest neighbours, on generated low-rank features and on Fashion-MNIST's own pixels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bottleneck.inspection import cosine_bound
from bottleneck.inspection.cosine_bound import bounded_rows, bounded_rows_for, exact_cosines
from bottleneck.inspection.duplicates import candidate_pairs, near_duplicates, normalized

FASHION = "/usr/share/datasets/fashion-mnist"


def _low_rank(n: int, d: int, rank: int, noise: float, seed: int = 0, copies: int = 0) -> np.ndarray:
    """Unit rows near a ``rank``-dimensional subspace, with ``copies`` near copies planted at the end (each a
    noisier or cleaner copy of an earlier row: cosines from about 0.95 to 0.999)."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + noise * rng.normal(size=(n, d)) * np.sqrt(
        rank
    )
    Z = normalized(Z)
    for c in range(copies):
        Z[n - 1 - c] = Z[c] + rng.normal(0, 0.002 + 0.004 * c / max(1, copies), d)
    return normalized(Z)


def _pairs(p) -> set:
    return set(zip(p.a.tolist(), p.b.tolist(), strict=True))


def test_the_bound_is_never_below_a_cosine_and_holds_the_energy():
    X = _low_rank(800, 300, 20, 0.3, copies=5)
    b = bounded_rows(X, dims=32)
    assert b.rows.shape == (800, 33) and b.rows.dtype == np.float32 and b.dims == 32
    S, U = X @ X.T, b.rows @ b.rows.T
    assert np.all(U >= S - 1e-5)
    # The energy is what the directions hold: most of it for rank-20 rows, and the rest is the residual column.
    assert 0.7 < b.energy < 1.0
    np.testing.assert_allclose(b.rows[:, -1] ** 2, 1 - np.sum(b.rows[:, :-1] ** 2, axis=1), atol=1e-5)
    # Near copies' residuals point the same way, so their bound is close to their cosine.
    assert U[0, 799] - S[0, 799] < 0.01
    assert "bounded through 32 dimensions (" in b.describe()


def test_exact_cosines_are_the_row_products():
    X = _low_rank(300, 64, 8, 0.5)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 300, 20_000), rng.integers(0, 300, 20_000)  # more than one chunk of pairs
    np.testing.assert_allclose(exact_cosines(X, a, b), np.sum(X[a] * X[b], axis=1), rtol=1e-5, atol=1e-6)


def test_the_threshold_scan_through_the_bound_finds_exactly_the_exact_pairs():
    X = _low_rank(3000, 256, 16, 0.3, copies=30)
    exact = near_duplicates(X, 0.97, block_bytes=4_000_000)
    bounded = near_duplicates(X, 0.97, block_bytes=4_000_000, bounded=bounded_rows(X, dims=32))
    assert len(exact) >= 20 and _pairs(bounded) == _pairs(exact)
    np.testing.assert_allclose(bounded.score, np.sum(X[bounded.a] * X[bounded.b], axis=1), rtol=1e-5)


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="apt-get install dataset-fashion-mnist")
def test_the_neighbour_scan_through_the_bound_holds_the_exact_neighbours_on_fashion_mnist():
    # Real structure: the pixels of 6 000 Fashion-MNIST images as 784-d features, 40 of them planted again as
    # slightly noisy copies (what a re-encoded image looks like to the features).
    from bottleneck.data.array_sources import idx_files, read_idx

    images = read_idx(idx_files(Path(FASHION))[("train", "images")])[:6000]
    rng = np.random.default_rng(0)
    X = images.reshape(len(images), -1).astype(np.float32)
    X[-40:] = np.clip(X[:40] + rng.normal(0, 6, X[:40].shape), 0, 255)
    X = normalized(X)
    exact = candidate_pairs(X)
    bounded = candidate_pairs(X, bounded=bounded_rows(X, dims=128))
    want, got = _pairs(exact), _pairs(bounded)
    assert len(got & want) / len(want) >= 0.995
    # Every pair at the threshold (the planted copies among them) is found: the bound never hides one.
    at_threshold = {
        (a, b) for a, b, s in zip(exact.a.tolist(), exact.b.tolist(), exact.score, strict=True) if s >= 0.97
    }
    assert len(at_threshold) > 1000 and at_threshold <= got
    assert {(c, 6000 - 40 + c) for c in range(40)} <= got
    np.testing.assert_allclose(bounded.score, np.sum(X[bounded.a] * X[bounded.b], axis=1), rtol=1e-5)


def test_the_scan_is_bounded_only_where_it_pays_and_ranks(monkeypatch):
    monkeypatch.setattr(cosine_bound, "MIN_ROWS", 1000)
    monkeypatch.setattr(cosine_bound, "DIMS", 64)
    assert bounded_rows_for(_low_rank(900, 300, 20, 0.1)) is None  # too few rows: the exact scan is seconds
    assert bounded_rows_for(_low_rank(1200, 100, 20, 0.1)) is None  # too few dimensions to cut
    flat = normalized(np.random.default_rng(0).normal(size=(1200, 300)).astype(np.float32))
    assert bounded_rows_for(flat) is None  # a flat spectrum: 64 of 300 dimensions hold ~30 % of the energy
    chosen = bounded_rows_for(_low_rank(1200, 300, 20, 0.1))
    assert chosen is not None and chosen.dims == 64 and chosen.energy >= cosine_bound.MIN_ENERGY


def test_the_page_and_summary_name_a_bounded_scan():
    from bottleneck.inspection.outputs import _rule_fact

    bounded = bounded_rows(_low_rank(600, 300, 20, 0.1), dims=64).describe()
    pixels = {"rule": "pixels", "candidate_pairs": 10, "images_compared": 8, "neighbours": 20}
    assert _rule_fact(pixels | {"scan": bounded}) == (
        f"pixels compared (10 candidate pairs of 8 images, the 20 nearest of each; scan {bounded})"
    )
    assert (
        bounded.startswith("bounded through 64 dimensions (")
        and "re-ranked by their exact cosines" in bounded
    )
    # A summary written before the bounded scan existed has no "scan": its scan was exact.
    assert _rule_fact(pixels) == "pixels compared (10 candidate pairs of 8 images, the 20 nearest of each)"
    features = {"rule": "features", "threshold": 0.97, "why": "pixel_check=False", "scan": "exact"}
    assert _rule_fact(features) == "features alone, cosine >= 0.97 (pixel_check=False)"
