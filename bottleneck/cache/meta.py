"""A cache folder's files read as they are: its metadata (``meta.json``, checked against its seal), its manifest, how
far it got, and which folder holds a key's cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bottleneck._io import read_json
from bottleneck.cache import integrity
from bottleneck.cache.key import cache_dir_name
from bottleneck.config import ExtractConfig
from bottleneck.data.manifest import Manifest
from bottleneck.errors import CacheError

META = integrity.META
MANIFEST = "manifest.npz"  # the columnar manifest (data.manifest.Manifest.to_bytes)
LEGACY_MANIFEST = "manifest.json"  # one dict per item: caches written before the columnar manifest


def read_manifest(path) -> tuple[Manifest, list]:
    """(every source item, the skipped ones as {"index", "id", "reason"}) of the cache folder ``path``."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return Manifest.from_bytes((path / MANIFEST).read_bytes())
    d = json.loads((path / LEGACY_MANIFEST).read_text())
    return Manifest.from_json(d), d.get("skipped", [])


def manifest_source(path) -> str | None:
    """The source a cache folder's manifest names, reading only its header (None when there is none)."""
    path = Path(path)
    try:
        if (path / MANIFEST).is_file():
            with np.load(path / MANIFEST, allow_pickle=False) as z:
                return json.loads(z["header"].tobytes().decode()).get("source") or None
        return json.loads((path / LEGACY_MANIFEST).read_text()).get("source") or None
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def read_meta(path, *, check: bool = True) -> dict:
    """A cache folder's metadata; with ``check``, only when it is a cache's and its seal matches (CacheDamaged)."""
    path = Path(path)
    meta_file = path / META
    if not path.exists():
        raise CacheError(
            f"no cache at {path}: the folder does not exist. Run `bottleneck extract SOURCE` first."
        )
    if not path.is_dir():
        raise CacheError(f"{path} is a file, not a cache folder; pass a folder made by `bottleneck extract`.")
    meta = read_json(
        meta_file,
        CacheError,
        missing=f"{path} is not a bottleneck cache (no {META}); pass a folder made by `bottleneck extract`.",
        redo="remove the cache and extract again.",
    )
    return integrity.check_meta(path, meta) if check else meta


def progress_text(meta: dict) -> str:
    """ "incomplete (k/n rows)": rows committed of every row the cache will hold (splits not started included)."""
    done = sum(meta.get("progress", {}).values())
    total = meta.get("rows_planned") or sum(s["n"] for s in meta.get("splits", {}).values())
    return f"incomplete ({done}/{total} rows)"


def find_cache_path(cache_dir, config: ExtractConfig, key: str) -> Path:
    """The folder of the cache of ``key`` under ``cache_dir``: absent, or holding exactly this key.

    The name is ``cache_dir_name`` (an 8-hex-digit prefix of the key, short enough to type). When a folder of
    that name belongs to another key (two keys sharing a prefix, or a folder that is no readable cache), the
    prefix grows to 16 digits, then to the whole key: two keys never share a folder, and another key's folder
    is never reused, resumed or deleted.
    """
    name = cache_dir_name(config, key)
    stem = name[: -len(key[:8])]
    for digits in (8, 16, len(key)):
        path = Path(cache_dir) / f"{stem}{key[:digits]}"
        if not path.exists() or _folder_key(path) == key:
            return path
    raise CacheError(
        f"{path} exists but does not hold the cache of key {key}; move it out of {cache_dir} and run again."
    )


def _folder_key(path: Path) -> str | None:
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("key") if isinstance(meta, dict) else None
