"""A 2-D map of the features on a stratified sample: t-SNE for small samples, UMAP (umap-learn) where installed,
PCA otherwise."""

from __future__ import annotations

import warnings

import numpy as np

from bottleneck import _tf
from bottleneck.errors import BottleneckError, install_hint, one_of

METHODS = ("auto", "umap", "tsne", "pca")
MAX_POINTS = 20000  # points drawn on the page; a larger cache is sampled per class
# ``auto`` draws up to this many points with t-SNE. UMAP compiles its numba kernels in every new process (about
# 25 s on 2 cores, whatever the size); scikit-learn's t-SNE needs no compiling but grows faster (measured on 2
# cores: 500 points 2.0 s, 2 000 points 9.3 s, 5 000 points 30 s), so it wins on small samples only.
TSNE_UP_TO = 1000


def sample_rows(y: np.ndarray, limit: int = MAX_POINTS, seed: int = 0, keep=None) -> np.ndarray:
    """At most ``limit`` row indices of labels ``y`` (N,), the same share of every class, sorted; the rows in
    ``keep`` (e.g. suspected label errors) are always in."""
    n = len(y)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = np.unique(np.asarray(keep if keep is not None else [], np.int64))
    chosen = np.zeros(n, bool)
    chosen[keep] = True
    share = max(0, limit - len(keep)) / n
    for c in np.unique(y):
        members = np.flatnonzero((y == c) & ~chosen)
        chosen[rng.permutation(members)[: int(round(share * len(members)))]] = True
    return np.flatnonzero(chosen)


def embed_2d(X: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """((N, 2) float32 coordinates scaled to [0, 1], the method used) for features ``X`` (N, D).

    ``auto``: t-SNE up to ``TSNE_UP_TO`` points, above that UMAP when umap-learn is installed (the ``inspect``
    extra), else PCA. UMAP and t-SNE run on the first 50 principal components (the usual speed-up; the
    neighbourhoods barely change). Fewer than 16 points are always drawn by PCA (too few neighbours).
    """
    if method not in METHODS:
        raise one_of("map_method", method, METHODS)
    X = np.asarray(X, np.float32).reshape(len(X), -1)
    if len(X) >= 16:
        if method == "tsne" or method == "auto" and len(X) <= TSNE_UP_TO:
            return _scaled(_tsne_coords(_components(X, seed), seed)), "tsne"
        if method in ("auto", "umap"):
            umap = _umap(required=method == "umap")
            if umap is not None:
                return _scaled(_umap_coords(umap, _components(X, seed), seed)), "umap"
    return _scaled(_pca(X, 2, seed)), "pca"


def _pca(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = max(1, min(k, X.shape[0], X.shape[1]))
    out = PCA(k, random_state=seed).fit_transform(X) if len(X) > 1 else np.zeros((len(X), k))
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def _components(X: np.ndarray, seed: int) -> np.ndarray:
    """The first 50 principal components of ``X`` (``X`` itself when it has no more columns): what t-SNE and
    UMAP run on."""
    return _pca(X, 50, seed) if X.shape[1] > 50 else X


def _tsne_coords(Z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    # scikit-learn wants perplexity < n; 30 is its default, a third of the points keeps tiny maps spread out.
    perplexity = min(30.0, (len(Z) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(Z)


def _umap_coords(umap, Z: np.ndarray, seed: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state, spectral init notes
        model = umap.UMAP(n_components=2, n_neighbors=min(15, len(Z) - 1), random_state=seed)
        return model.fit_transform(Z)


def _umap(required: bool):
    """The umap module, imported quietly (it imports TensorFlow for its parametric variant); None when missing
    unless ``required``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _tf.tensorflow()  # umap imports it anyway: through the quiet import, not with its log lines
            import umap
    except ImportError:
        if required:
            raise BottleneckError(
                f"map_method='umap' needs umap-learn: {install_hint('inspect')}, or use map_method='pca'."
            ) from None
        return None
    return umap


def _scaled(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return ((xy - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
