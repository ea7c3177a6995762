"""Cosines through fewer dimensions, with an upper bound: what lets the near-duplicate scan of a large cache run
its all-pairs matrix products on a fifth of the feature dimensions.

For unit rows x, y and an orthonormal basis V of d dimensions, x = Px + Rx with Px = V Vᵀx, so
cos(x, y) = <Vᵀx, Vᵀy> + <Rx, Ry> <= <Vᵀx, Vᵀy> + |Rx| |Ry| (Cauchy-Schwarz). One row [Vᵀx, |Rx|] per image
turns that bound into a single dot product: a pair whose bound is below a limit has a true cosine below it,
whatever V is. V holds the top principal directions of a sample of the rows, so the bound is tight where the
features concentrate, and tightest where it matters: the residuals of near copies point the same way.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bottleneck._tf import cpu_count

# Dimensions kept. On EfficientNet-Lite0 features of Fashion-MNIST (1 280-d) 256 hold 95 % of the energy; each
# row's 80 best pairs by the bound held its 20 nearest neighbours by the exact cosine for all 1 500 rows checked
# (64: 0.98; 128: 0.998) - scripts/bench_inspect.py scan, docs/benchmarks.md "Inspect".
DIMS = 256
# The scan switches to the bound from this many rows: below it the exact scan takes seconds (20 000 x 1 280:
# about 4 s on 2 cores), and its result is exact by construction.
MIN_ROWS = 32_768
# Share of the rows' energy (mean |Vᵀx|^2) the kept dimensions must hold; flatter spectra (features that spread
# over every dimension) make the bound too loose to rank neighbours by, and the exact scan is used.
MIN_ENERGY = 0.9
SAMPLE = 4096  # rows whose principal directions are taken (their Gram matrix: SAMPLE^2 or D^2 floats)
CHUNK = 8192  # pairs whose exact cosines are computed at a time (2 x CHUNK rows gathered)


@dataclass(frozen=True)
class BoundedRows:
    """``rows`` (N, dims + 1) float32: each row's coordinates on ``dims`` principal directions and, last, the norm
    of what they leave out; ``energy``: the mean share of a row's squared norm the directions hold."""

    rows: np.ndarray
    dims: int
    energy: float

    def describe(self) -> str:
        return (
            f"bounded through {self.dims} dimensions ({100 * self.energy:.1f} % of the energy), pairs re-ranked "
            "by their exact cosines"
        )


def bounded_rows(X: np.ndarray, dims: int = DIMS, *, sample: int = SAMPLE, seed: int = 0) -> BoundedRows:
    """``BoundedRows`` of the unit rows of ``X`` (N, D) float32: the top ``dims`` principal directions (uncentred:
    the bound is on dot products) of ``sample`` rows drawn with ``seed``."""
    n, d_in = X.shape
    dims = min(dims, d_in)
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n, sample), replace=False))
    S = X[pick].astype(np.float64)
    if d_in <= len(S):
        _, V = np.linalg.eigh(S.T @ S)  # ascending
        V = V[:, ::-1][:, :dims]
    else:  # wide features: the directions from the sample's own Gram matrix (SAMPLE^2, not D^2)
        _, U = np.linalg.eigh(S @ S.T)
        V = S.T @ U[:, ::-1][:, :dims]
    V = np.linalg.qr(V)[0].astype(np.float32)  # orthonormal to float precision: the bound relies on it
    P = X @ V
    inside = np.einsum("ij,ij->i", P, P)
    residual = np.sqrt(np.maximum(np.einsum("ij,ij->i", X, X) - inside, 0.0))
    energy = float(np.mean(inside))
    return BoundedRows(np.ascontiguousarray(np.column_stack([P, residual]), np.float32), dims, energy)


def bounded_rows_for(X: np.ndarray) -> BoundedRows | None:
    """The bound the scan of ``X`` (N, D, unit rows) should use, or None for the exact scan: too few rows to
    gain, too few dimensions to cut, or a spectrum too flat for the bound to rank by."""
    n, d_in = X.shape
    if n < MIN_ROWS or d_in < 2 * DIMS:
        return None
    bounded = bounded_rows(X, DIMS)
    return bounded if bounded.energy >= MIN_ENERGY else None


def exact_cosines(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) float32: the dot products of rows ``a[i]`` and ``b[i]`` of ``X``, in chunks on the usable cores
    (NumPy's gathers and row products run on one core each)."""
    out = np.empty(len(a), np.float32)

    def one(start):
        s = slice(start, start + CHUNK)
        out[s] = np.einsum("ij,ij->i", X[a[s]], X[b[s]])

    with ThreadPoolExecutor(max(1, cpu_count())) as pool:
        list(pool.map(one, range(0, len(a), CHUNK)))
    return out
