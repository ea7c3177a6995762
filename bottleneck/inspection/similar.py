"""Nearest images of a cache by cosine (``bottleneck similar``): exact, a block scan over the L2-normalised
features as ``inspect`` reads them, the query a cached row (by id) or an image embedded with the cache's own
backbone settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck._ownership import atomic_dir, check_out
from bottleneck.cache.reader import Cache, as_cache
from bottleneck.callbacks import Notify, Progress
from bottleneck.config import ExtractConfig
from bottleneck.errors import BottleneckError
from bottleneck.heads.feature_blocks import iter_blocks
from bottleneck.inference.embedder import Embedder
from bottleneck.inspection.duplicates import normalized
from bottleneck.inspection.rows import Rows
from bottleneck.inspection.run_page import PAGE, THUMBS
from bottleneck.job_settings import SIMILAR
from bottleneck.report.page import render_page
from bottleneck.report.sections import item
from bottleneck.report.thumbnails import row_thumbnails

# The settings of an extraction that an Embedder takes: what decides a row's features (besides engine and speed).
_EMBEDDER_SETTINGS = (
    "backbone",
    "weights",
    "layer",
    "pooling",
    "image_size",
    "resize",
    "preprocess",
    "mean",
    "std",
    "channels",
    "fast_decode",
)


def embed_image(cache: Cache, image, *, cache_dir="cache") -> np.ndarray:
    """The features of one image file as the cache's backbone settings compute them, flattened (D,)."""
    path = Path(image)
    if not path.is_file():
        raise BottleneckError(f"image={str(image)!r} is not an image file; pass an image's path, or id=ID.")
    config: ExtractConfig = cache.config
    embedder = Embedder(**{k: getattr(config, k) for k in _EMBEDDER_SETTINGS}, cache_dir=cache_dir)
    q = np.asarray(embedder.transform([path]), np.float32).reshape(-1)
    dim = int(np.prod(cache.feature_shape))
    if q.size != dim:
        raise BottleneckError(
            f"image={str(image)!r} gives {q.size} features but cache {cache.path.name} has {dim}; the cache's "
            "backbone cannot be rebuilt as it was: query with id=ID instead."
        )
    return q


def row_of_id(rows: Rows, id: str) -> int:
    """The global row of an image id (CacheError-like one line when unknown, with an example id)."""
    hits = np.flatnonzero(rows.id == str(id))
    if not len(hits):
        example = f" (e.g. {rows.id[0]!r})" if len(rows) else ""
        raise BottleneckError(f"id={id!r} is not an image of this cache; pass one of its ids{example}.")
    return int(hits[0])


def _scan(cache: Cache, rows: Rows, q: np.ndarray, splits, k: int, progress: Progress | None):
    """(global rows, cosines) of the ``k`` best rows of ``splits``, kept as the blocks are read."""
    best_rows, best_cos = np.zeros(0, np.int64), np.zeros(0, np.float32)
    total = sum(cache.n(s) for s in splits)
    done = 0
    for s in splits:
        start = int(rows.of(s)[0]) if cache.n(s) else 0
        for r, block in iter_blocks(cache.features(s)):
            cos = normalized(block) @ q
            best_rows = np.concatenate([best_rows, start + r])
            best_cos = np.concatenate([best_cos, cos.astype(np.float32)])
            if len(best_rows) > k:
                keep = np.argpartition(-best_cos, k - 1)[:k]
                best_rows, best_cos = best_rows[keep], best_cos[keep]
            done += len(r)
            if progress:
                progress("similar", done, total)
    return best_rows, best_cos


def find_similar(
    cache,
    image=None,
    *,
    id: str | None = None,
    k: int = 10,
    split: str | None = None,
    cache_dir="cache",
    report=None,
    source=None,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> list[dict]:
    """The ``k`` rows of ``cache`` nearest to a query by cosine, best first: dicts with ``id``, ``split``,
    ``row`` (within its split), ``label``, ``class_name``, ``cosine``. The query is the cached row of image
    ``id`` (it comes back first, cosine 1) or an ``image`` file embedded with the cache's backbone settings
    (``cache_dir``: where a verified ONNX engine may be found). ``split``: search only that split. Exact: every
    row is compared, block by block; ties keep the query first, then the cache's order. An int8 cache's query
    image is embedded in fp32: close to, not equal with, the cache's rows.

    ``report``: also write that folder (index.html and thumbs/, read from the cache's source, or ``source`` if
    the images moved), built whole; a folder bottleneck did not write is refused before any read unless
    ``force``."""
    if (image is None) == (id is None):
        raise BottleneckError("pass either image=PATH or id=ID (one of them) as the query.")
    SIMILAR.validate({"k": k})
    if report is not None:
        check_out(report, force=force, param="report")
    cache = as_cache(cache)
    splits = list(cache.splits) if split is None else [split]
    for s in splits:
        cache.n(s)  # an unknown split: one line naming the ones there are
    rows = Rows(cache)
    query_row = None
    if id is not None:
        query_row = row_of_id(rows, id)
        s = rows.split_name(query_row)
        q = np.asarray(cache.features(s)[int(rows.row[query_row]) : int(rows.row[query_row]) + 1])
    else:
        q = embed_image(cache, image, cache_dir=cache_dir)[None]
    q = normalized(q)[0]
    found, cos = _scan(cache, rows, q, splits, k, progress)
    order = np.lexsort((found, found != query_row, -cos.astype(np.float64)))
    found, cos = found[order], cos[order]
    if report is not None:
        query = f"image {id}" if id is not None else f"file {image}"
        write_page(cache, rows, found, cos, query, report, source=source, force=force, notify=notify)
    return [
        {
            "id": str(rows.id[r]),
            "split": rows.split_name(r),
            "row": int(rows.row[r]),
            "label": int(rows.label[r]),
            "class_name": rows.class_name(rows.label[r]),
            "cosine": float(c),
        }
        for r, c in zip(found.tolist(), cos.tolist(), strict=True)
    ]


def write_page(
    cache: Cache, rows: Rows, found, cos, query: str, out, *, source=None, force=False, notify=None
):
    """``out``/index.html: the nearest images as one strip of thumbnails (cosine, split, class under each)."""
    with atomic_dir(out, "page", force=force, notify=notify) as tmp:
        thumbs = row_thumbnails(
            rows, found, tmp / THUMBS, source=source, source_options=cache.meta.get("source_options")
        )
        items = [
            item(rows, r, thumbs, [f"cosine {c:.4f}", rows.split_name(r), rows.class_name(rows.label[r])])
            for r, c in zip(found.tolist(), cos.tolist(), strict=True)
        ]
        note = "Exact cosine of the L2-normalised features, best first."
        if rows.manifest is None:
            note += " The cache records no source images: no thumbnails."
        data = {
            "title": f"Nearest images to {query}",
            "subtitle": f"Cache {cache.path.name}: the {len(items)} nearest by cosine.",
            "facts": [("cache", str(cache.path)), ("query", query), ("backbone", cache.config.backbone)],
            "counts": [("shown", "images shown", len(items))],
            "strips": [("similar", "Nearest images", {"items": items, "total": len(items), "note": note})],
        }
        (tmp / PAGE).write_text(render_page(data), encoding="utf-8")
    return Path(out) / PAGE
