"""Near duplicates confirmed by their images: tiny copies of the candidate images, compared by pixel correlation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.data.decode import resize_image
from bottleneck.data.source import open_reader, reader_options
from bottleneck.inspection.cosine_bound import bounded_rows_for
from bottleneck.inspection.duplicates import FLOOR, candidate_pairs, near_duplicates, without
from bottleneck.report.thumbnails import read_checked, rebased, source_problem

SIDE = 8  # side of the small grey copy of each candidate image that is compared (an 8 x 8 "average hash")
DRAFT = (
    4 * SIDE
)  # JPEGs decode at a reduced scale of at least this side (PIL draft): far above what is compared
# Root-mean-square difference of the two 8 x 8 grey copies (luma, 0-255, each less its mean) at or below which a
# candidate pair is the same picture. Measured (scripts/bench_inspect.py planted; README "Inspect"): JPEG q75 and
# +-10 % resized copies of 28 px Fashion-MNIST images differ by at most 2.6 grey levels, of 32 px colour photo
# crops by at most 1.2; distinct Fashion-MNIST images among each other's 20 nearest neighbours by at least 4.0.
# An absolute difference, not a correlation: JPEG's error is absolute, so a correlation fails low-contrast copies.
MAX_RMS = 3.0
CHUNK = 1 << 16  # pairs compared at a time
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's convert("L")


def tiny_images(
    manifest,
    rows,
    *,
    source=None,
    source_options=None,
    resize: str = "squash",
    workers: int = 2,
    progress: Progress | None = None,
) -> np.ndarray:
    """(len(rows), SIDE * SIDE) float32: the grey (luma) 8 x 8 copies of the images of manifest ``rows``, each
    less its mean, read as the page's thumbnails read them (from ``source`` where they moved, content hash
    checked) and resized as extraction resizes (``resize``)."""

    rows = np.asarray(rows, np.int64)
    out = np.zeros((len(rows), SIDE * SIDE), np.float32)
    if not len(rows):
        return out
    manifest = rebased(manifest, source)
    options = reader_options(source_options)
    items = list(manifest.items_at(rows))
    reader = open_reader(manifest, **options)

    def one(k):
        pixels = read_checked(
            reader, items[k], "to compare it", "comparing it would not compare what the cache holds", DRAFT
        )
        small = resize_image(pixels, SIDE, resize)
        grey = small.reshape(-1, 3).astype(np.float32) @ LUMA
        out[k] = grey - grey.mean()

    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="pixels") as pool:
            for done, _ in enumerate(pool.map(one, range(len(items))), 1):
                if progress and (done % 1024 == 0 or done == len(items)):
                    progress("images compared", done, len(items))
    finally:
        reader.close()
    return out


def pixel_distances(tiny: np.ndarray, a, b) -> np.ndarray:
    """(P,) float32: root-mean-square difference, in grey levels, of the pairs (``a[i]``, ``b[i]``) of ``tiny``
    (M, 64) float32 (``tiny_images``: mean-free 8 x 8 grey copies)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), CHUNK):
        d = tiny[a[start : start + CHUNK]] - tiny[b[start : start + CHUNK]]
        out[start : start + CHUNK] = np.sqrt(np.einsum("ij,ij->i", d, d) / d.shape[1])
    return out


def near_duplicates_by_pixels(
    X: np.ndarray,
    rows,
    exact,
    *,
    threshold: float,
    neighbours: int,
    pixel_check: bool = True,
    source=None,
    source_options=None,
    resize: str = "squash",
    progress: Progress | None = None,
) -> tuple:
    """Near duplicates of a cache's ``rows`` (``inspection.rows.Rows``) from its features ``X`` (N, D), unit norm,
    ``exact`` pairs left out; (``Pairs``, the rule as a dict for the summary).

    With the images at hand (``pixel_check``, a manifest, its source readable here or at ``source``): candidate
    pairs from the features (``candidate_pairs``: each row's ``neighbours`` nearest, and every pair of cosine >=
    ``threshold``), each kept when the two images are the same picture (8 x 8 grey copies within ``MAX_RMS``
    grey levels); only candidate images are read. Otherwise the features alone decide: cosine >= ``threshold``, and the rule says why.
    """

    # Large caches scan through fewer dimensions with an exact bound (cosine_bound); the rule says which.
    bounded = bounded_rows_for(X)
    scan = bounded.describe() if bounded is not None else "exact"
    rule = {"rule": "features", "threshold": float(threshold), "scan": scan}
    why = None
    if not pixel_check:
        why = "pixel_check=False"
    elif rows.manifest is None:
        why = "the cache records no source images"
    if why is not None:
        pairs = near_duplicates(X, threshold, bounded=bounded, progress=progress)
        return without(pairs, exact), rule | {"why": why}

    cand = candidate_pairs(X, neighbours=neighbours, threshold=threshold, bounded=bounded, progress=progress)
    cand = without(cand, exact)
    need = np.unique(np.concatenate([cand.a, cand.b]))
    problem = source_problem(rows.manifest, rows.manifest_rows[need], source)
    if problem is not None:
        return cand.take(cand.score >= threshold), rule | {"why": f"images unreadable: {problem}"}
    tiny = tiny_images(
        rows.manifest, rows.manifest_rows[need], source=source, source_options=source_options, resize=resize,
        progress=progress,
    )  # fmt: skip
    dist = pixel_distances(tiny, np.searchsorted(need, cand.a), np.searchsorted(need, cand.b))
    keep = dist <= MAX_RMS
    near = cand.take(keep)
    near.pixel = dist[keep]
    return near, {
        "rule": "pixels",
        "neighbours": int(neighbours),
        "floor": FLOOR,
        "threshold": float(threshold),
        "max_pixel_rms": MAX_RMS,
        "scan": scan,
        "candidate_pairs": len(cand),
        "images_compared": len(need),
    }
