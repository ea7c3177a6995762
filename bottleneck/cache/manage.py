"""Cache management: list, verify, remove, garbage-collect."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck.cache import META, open_cache, progress_text, read_meta, rows_digest
from bottleneck.cache.lock import is_locked
from bottleneck.cache.reader import manifest_source
from bottleneck.errors import CacheError


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def list_caches(cache_dir="cache") -> list[dict]:
    """One dict per cache folder under cache_dir (complete or not), newest first."""
    root = Path(cache_dir)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not (d / META).is_file():
            continue
        try:
            meta = read_meta(d)
        except CacheError:
            out.append({"path": str(d), "complete": False, "status": "corrupt metadata"})
            continue
        splits = {s: v["n"] for s, v in meta.get("splits", {}).items()}
        out.append(
            {
                "path": str(d),
                "key": meta.get("key"),
                "backbone": meta.get("config", {}).get("backbone"),
                "source": meta.get("source") or manifest_source(d),
                "splits": splits,
                "rows": sum(splits.values()),
                "bytes": dir_size(d),
                "complete": bool(meta.get("complete")),
                "status": "complete" if meta.get("complete") else progress_text(meta),
                "created": meta.get("created"),
            }
        )
    out.sort(key=lambda r: r.get("created") or "", reverse=True)
    return out


@dataclass
class VerifyReport:
    path: str
    regions: int = 0
    bad: list = field(default_factory=list)  # [{"split", "start", "stop", "reason"}]
    recomputed: int = 0
    max_abs_diff: float | None = None

    @property
    def ok(self) -> bool:
        return not self.bad


def verify_cache(path, *, recompute: int = 0, tolerance: float = 1e-4, seed: int = 0) -> VerifyReport:
    """Re-read every committed region and compare its checksum; optionally re-extract ``recompute`` random rows.

    ``tolerance`` bounds the max abs difference of recomputed rows relative to the feature scale (max |x|), on
    top of the rounding of the stored dtype: a recomputed row is rounded to that dtype before the comparison and
    may differ from the stored one by one unit in the last place (eps of float16 is 9.8e-4).
    """
    cache = open_cache(path, allow_incomplete=True)
    report = VerifyReport(str(path))
    for split, regions in cache.meta.get("checksums", {}).items():
        feats = cache.features(split)
        for start, stop, digest in regions:
            report.regions += 1
            try:
                rows = np.asarray(feats[start:stop])
            except Exception as exc:  # a corrupt compressed chunk fails to decode
                report.bad.append(
                    {"split": split, "start": start, "stop": stop, "reason": f"unreadable: {exc}"}
                )
                continue
            if rows_digest(rows) != digest:
                report.bad.append(
                    {"split": split, "start": start, "stop": stop, "reason": "checksum mismatch"}
                )
    if recompute:
        _recompute_rows(cache, report, recompute, tolerance, seed)
    cache.close()
    return report


def _recompute_rows(cache, report: VerifyReport, k: int, tolerance: float, seed: int) -> None:
    from bottleneck.data import open_source
    from bottleneck.inference.engines import create_engine

    source = cache.meta.get("source")
    if not source or not Path(source).exists():
        raise CacheError(
            f"cannot recompute rows: the source {source!r} of {cache.path} is not available here."
        )
    rng = np.random.default_rng(seed)
    if cache.config.precision == "int8":
        from bottleneck.inference.int8 import saved_int8_engine

        engine = saved_int8_engine(cache.config, cache.meta, cache.path.parent)
    else:
        engine = create_engine(cache.config)
    with open_source(source, **cache.meta.get("source_options", {})) as src:
        by_id = {(it.split, it.id): it for it in src.manifest.items}
        diffs = []
        for split in cache.splits:
            n = cache.n(split)
            ids = cache.ids(split)
            feats = cache.features(split)
            for row in rng.choice(n, size=min(k, n), replace=False):
                item = by_id.get((split, str(ids[row])))
                if item is None:
                    report.bad.append(
                        {"split": split, "start": int(row), "stop": int(row) + 1, "reason": "not in source"}
                    )
                    continue
                img = src.load(item, engine.input_size, cache.config.resize, cache.config.fast_decode)
                stored = np.asarray(feats[int(row)])
                # Round the recomputed row as extraction did before storing it, then compare in float32.
                new = np.asarray(engine(img[None])[0]).astype(stored.dtype).astype(np.float32)
                old = stored.astype(np.float32)
                scale = max(float(np.abs(old).max()), 1e-6)
                diff = float(np.abs(new - old).max()) / scale
                diffs.append(diff)
                report.recomputed += 1
                if diff > tolerance + _rounding_allowance(stored.dtype, scale):
                    report.bad.append(
                        {
                            "split": split,
                            "start": int(row),
                            "stop": int(row) + 1,
                            "reason": f"recomputed differs ({diff:.2e})",
                        }
                    )
        report.max_abs_diff = max(diffs) if diffs else None


def _rounding_allowance(dtype, scale: float) -> float:
    """How far, relative to ``scale``, two values that differ by less than the tolerance can end up once both are
    rounded to ``dtype``.

    A value near a rounding boundary can round to the neighbouring representable number while its recomputation
    rounds to this one: one unit in the last place of the row's largest value, eps * scale (or the fixed spacing
    of subnormals, for rows that small). It is negligible for float32 (1.2e-7) and what float16 needs (9.8e-4):
    float16 rounding alone exceeds the default 1e-4 tolerance, and comparing without it reported good float16
    caches as bad. A real change (other weights, decoding or resizing) moves features far more than one ulp.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        return 0.0
    info = np.finfo(dtype)
    return max(float(info.eps) * scale, float(info.smallest_subnormal)) / scale


def remove_cache(path) -> int:
    """Delete a cache folder; returns the bytes freed. Refuses folders that are not caches."""
    path = Path(path)
    read_meta(path)  # raises a clear CacheError for a folder that is not a cache
    size = dir_size(path)
    shutil.rmtree(path)
    lock = path.parent / f".{path.name}.lock"
    lock.unlink(missing_ok=True)
    return size


def gc_caches(cache_dir="cache", *, older_than_s: float = 24 * 3600, dry_run: bool = False) -> list[dict]:
    """Remove incomplete caches older than a threshold and orphaned temp/lock files. Returns what was removed."""

    root = Path(cache_dir)
    removed = []
    now = time.time()
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        if d.is_dir() and (d / META).is_file():
            try:
                meta = read_meta(d)
                complete = bool(meta.get("complete"))
            except CacheError:
                complete = False
            age = now - (d / META).stat().st_mtime
            if complete or age < older_than_s:
                continue
            if is_locked(d):  # a running extraction: never collect under it
                continue
            removed.append({"path": str(d), "bytes": dir_size(d), "reason": "incomplete"})
            if not dry_run:
                shutil.rmtree(d)
        elif d.is_file() and d.name.endswith(".tmp") and now - d.stat().st_mtime > 3600:
            removed.append({"path": str(d), "bytes": d.stat().st_size, "reason": "temp file"})
            if not dry_run:
                d.unlink()
    for d in root.glob("*/.*.tmp"):
        if now - d.stat().st_mtime > 3600:
            removed.append({"path": str(d), "bytes": d.stat().st_size, "reason": "temp file"})
            if not dry_run:
                d.unlink()
    return removed
