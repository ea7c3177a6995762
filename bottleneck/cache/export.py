"""A cache's features out of bottleneck: one Parquet table per split (id, split, label, class name, features as a
fixed-size list) or NumPy files, streamed block by block through the checksum-verified reads of ``Cache``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bottleneck._io import write_json_atomic
from bottleneck._ownership import atomic_dir, check_out
from bottleneck.cache.reader import Cache, as_cache
from bottleneck.callbacks import Notify, Progress
from bottleneck.errors import BottleneckError, install_hint
from bottleneck.job_settings import CACHE_EXPORT

METADATA_KEY = b"bottleneck"  # the Parquet schema metadata entry holding ``description`` as JSON
DESCRIPTION = "export.json"  # beside the tables: the same description, for both formats
_BLOCK_BYTES = 32 << 20  # at most this many bytes of features held at once


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BottleneckError(
            f"to='parquet' needs pyarrow, which is not installed: {install_hint('parquet')} (or to='npy')."
        ) from None
    return pa, pq


def description(cache: Cache, split: str | None = None) -> dict:
    """What a reader needs besides the values: the cache key and folder, backbone, layers, class names, shape."""
    layers = cache.meta.get("layers") or []
    out = {
        "cache": cache.path.name,
        "key": cache.key,
        "backbone": cache.config.backbone,
        "layers": [d["name"] for d in layers],
        "layer_columns": [[d["name"], int(d["start"]), int(d["stop"])] for d in layers],
        "feature_shape": list(cache.feature_shape),
        "class_names": list(cache.class_names),
        "splits": {s: cache.n(s) for s in cache.splits},
    }
    if split is not None:
        out["split"] = split
    return out


def blocks(cache: Cache, split: str):
    """(start, stop, features (rows, D) flattened) of a split, read block by block in stored order: whole
    stored chunks at a time where they fit, at most ``_BLOCK_BYTES`` of features (each read checked by ``Cache.features``)."""
    X = cache.features(split)
    n = int(X.shape[0])
    row_bytes = max(1, int(np.prod(X.shape[1:], dtype=np.int64)) * np.dtype(X.dtype).itemsize)
    chunk = int(cache.meta["splits"][split].get("chunk_rows") or 1)
    rows = max(1, _BLOCK_BYTES // row_bytes)
    rows = rows // chunk * chunk if rows >= chunk else rows  # whole stored chunks where they fit
    for a in range(0, n, rows):
        b = min(n, a + rows)
        block = np.asarray(X[a:b])
        yield a, b, block.reshape(b - a, -1)


def _columns(cache: Cache, split: str) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([str(i) for i in np.asarray(cache.ids(split)).tolist()], dtype=object)
    return ids, np.asarray(cache.labels(split), np.int64)


def _hf_features(cache: Cache, dim: int, dtype: np.dtype) -> dict:
    """The Hugging Face ``datasets`` description of the columns (what ``Features.arrow_schema`` embeds): the label
    a ``ClassLabel`` with the cache's class names. ``Sequence`` with a length, which old and new versions read."""
    text = {"dtype": "string", "_type": "Value"}
    features = {
        "id": text,
        "split": text,
        "label": {"names": list(cache.class_names), "_type": "ClassLabel"},
        "class_name": text,
        "features": {"feature": {"dtype": dtype.name, "_type": "Value"}, "length": dim, "_type": "Sequence"},
    }
    return {"info": {"features": features}}


def _write_parquet(cache: Cache, split: str, path: Path, progress: Progress | None) -> None:
    pa, pq = _pyarrow()
    ids, labels = _columns(cache, split)
    names = np.array(cache.class_names, dtype=object)
    dim = int(np.prod(cache.feature_shape, dtype=np.int64))
    dtype = np.dtype(np.float16 if np.dtype(cache.features(split).dtype) == np.float16 else np.float32)
    value_type = pa.float16() if dtype == np.float16 else pa.float32()
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("label", pa.int64()),
            ("class_name", pa.string()),
            ("features", pa.list_(value_type, dim)),
        ],
        metadata={
            METADATA_KEY: json.dumps(description(cache, split)).encode(),
            b"huggingface": json.dumps(_hf_features(cache, dim, dtype)).encode(),
        },
    )
    n = cache.n(split)
    with pq.ParquetWriter(path, schema) as writer:
        for a, b, X in blocks(cache, split):
            values = X.astype(dtype, copy=False).ravel()
            table = pa.table(
                [
                    pa.array(ids[a:b], pa.string()),
                    pa.array([split] * (b - a), pa.string()),
                    pa.array(labels[a:b], pa.int64()),
                    pa.array(names[labels[a:b]], pa.string()),
                    pa.FixedSizeListArray.from_arrays(pa.array(values, value_type), dim),
                ],
                schema=schema,
            )
            writer.write_table(table)
            if progress:
                progress(split, b, n)
        if n == 0:
            writer.write_table(schema.empty_table())


def _write_npy(cache: Cache, split: str, folder: Path, progress: Progress | None) -> None:
    """SPLIT.features.npy written as a stream (the header, then each block's bytes: no memory map, whose dirty
    pages would grow with the file), then the labels and ids."""
    ids, labels = _columns(cache, split)
    dtype = np.dtype(cache.features(split).dtype)
    n = cache.n(split)
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (n, *cache.feature_shape),
    }
    with open(folder / f"{split}.features.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for _, b, block in blocks(cache, split):
            fh.write(np.ascontiguousarray(block, dtype).tobytes())
            if progress:
                progress(split, b, n)
    np.save(folder / f"{split}.labels.npy", labels)
    np.save(folder / f"{split}.ids.npy", np.array(ids.tolist(), dtype=str))


def export_cache(
    cache,
    out,
    *,
    to: str = "parquet",
    splits=None,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> list[Path]:
    """Write a cache's rows to the folder ``out``: ``SPLIT.parquet`` per split (columns id, split, label,
    class_name, features as a fixed-size list of the cache's float32/float16; the description in the schema
    metadata under ``bottleneck``) or, with ``to="npy"``, ``SPLIT.features.npy`` (N, *shape), ``SPLIT.labels.npy``
    and ``SPLIT.ids.npy``; ``export.json`` describes either. ``splits``: some splits ("train,val" or a list). Features are read block by block, never whole.

    ``out`` is built whole in a hidden sibling; an existing folder bottleneck did not write is refused unless
    ``force`` (then moved aside). Returns the files written, in ``out``."""
    CACHE_EXPORT.validate({"to": to})
    if to == "parquet":
        _pyarrow()
    cache = as_cache(cache)
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    chosen = list(splits) if splits else list(cache.splits)
    for s in chosen:
        cache.n(s)  # an unknown split: one line naming the ones there are
    out = Path(out)
    check_out(out, force=force, param="OUT")  # the command line's argument; atomic_dir checks again
    with atomic_dir(out, "cache-export", force=force, notify=notify) as tmp:
        for s in chosen:
            if to == "parquet":
                _write_parquet(cache, s, tmp / f"{s}.parquet", progress)
            else:
                _write_npy(cache, s, tmp, progress)
        write_json_atomic(tmp / DESCRIPTION, description(cache) | {"format": to, "exported": chosen})
        names = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("."))
    return [out / name for name in names]
