"""Cache management: list, verify, remove, garbage-collect."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck.cache import integrity
from bottleneck.cache.health import check_cache
from bottleneck.cache.integrity import META, CacheDamaged
from bottleneck.cache.lock import is_locked
from bottleneck.cache.meta import manifest_source, progress_text, read_meta
from bottleneck.cache.reader import Cache
from bottleneck.errors import CacheError


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def _raw_meta(path: Path):
    """meta.json as JSON (any JSON value), or None when it cannot be read or parsed."""
    try:
        return json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None


def list_caches(cache_dir="cache") -> list[dict]:
    """One dict per cache folder under cache_dir (complete or not), newest first; folders whose meta.json is not
    a cache's, or fails its seal, are listed with that status instead of stopping the listing."""
    root = Path(cache_dir)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / META).is_file():
            continue
        try:
            meta = read_meta(d)
        except CacheDamaged:
            raw = _raw_meta(d)
            status = "not a cache" if integrity.marker_problem(raw) else "damaged metadata"
            out.append({"path": str(d), "complete": False, "status": status, "bytes": dir_size(d)})
            continue
        except CacheError:
            out.append(
                {"path": str(d), "complete": False, "status": "corrupt metadata", "bytes": dir_size(d)}
            )
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


def verify_cache(path, *, progress=None, then=None) -> VerifyReport:
    """Check a cache whole: its sealed metadata and manifest, row counts, labels and ids against their digests,
    and every committed feature region read in full against its checksum. ``then(cache, report)`` runs after
    checks that found nothing (``bottleneck.inference.recompute`` re-extracts rows there). A complete cache found
    whole is recorded as such (the next hit reads no data).
    """
    report = VerifyReport(str(path))
    try:
        meta = read_meta(path)
    except CacheDamaged as exc:
        report.bad.append({"split": None, "start": None, "stop": None, "reason": str(exc)})
        return report
    cache = Cache(Path(path), meta)
    try:
        try:
            cache.manifest()
        except CacheDamaged as exc:
            report.bad.append({"split": None, "start": None, "stop": None, "reason": str(exc)})
        problems, report.regions = check_cache(cache, progress=progress)
        report.bad += [p.as_dict() for p in problems]
        if then is not None and report.ok:
            then(cache, report)
    finally:
        cache.close()
    if report.ok and meta.get("complete"):
        integrity.write_witness(path)
    return report


def check_removable(path) -> Path:
    """``path`` when it is a cache folder `cache rm` may delete; CacheError (one line) otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise CacheError(f"no cache folder at {path}; pass a folder listed by `bottleneck cache ls`.")
    if path.is_symlink():
        raise CacheError(
            f"{path} is a symbolic link; remove the link itself, or pass the folder it points to."
        )
    problem = integrity.folder_problem(path, _raw_meta(path))
    if problem:
        raise CacheError(
            f"refusing to delete {path}: {problem}. Only folders made by `bottleneck extract` are removed; "
            "delete it by hand if you are sure."
        )
    if is_locked(path):
        raise CacheError(
            f"refusing to delete {path}: an extraction is writing it; wait for it or stop it first."
        )
    return path


def remove_cache(path) -> int:
    """Delete a cache folder; returns the bytes freed. Refuses folders that are not caches (see
    ``integrity.folder_problem``) and caches an extraction is writing."""
    path = check_removable(path)
    size = dir_size(path)
    shutil.rmtree(path)
    lock = path.parent / f".{path.name}.lock"
    lock.unlink(missing_ok=True)
    return size


# Leftovers of interrupted writers, hidden beside the caches: temp files and folders (``_io.temp_path``) and caches
# set aside as damaged while their good rows were reused (``integrity.DAMAGED``).
_LEFTOVER_AGE_S = 3600


def _leftover(d: Path) -> str | None:
    name = d.name
    if not name.startswith("."):
        return None
    if ".tmp" in name:
        return "temp file" if d.is_file() else "temp folder"
    if integrity.DAMAGED in name and d.is_dir():
        return "damaged cache set aside"
    return None


def gc_caches(cache_dir="cache", *, older_than_s: float = 24 * 3600, dry_run: bool = False) -> list[dict]:
    """Remove incomplete caches older than a threshold and orphaned temp files, temp folders and caches set aside
    as damaged (older than an hour). Only folders that are caches (see ``check_removable``) are ever removed;
    folders holding a meta.json that is not a cache's are left alone. Returns what was removed."""
    root = Path(cache_dir)
    removed = []
    now = time.time()
    if not root.is_dir():
        return removed

    def drop(d: Path, reason: str) -> None:
        size = dir_size(d) if d.is_dir() else d.stat().st_size
        removed.append({"path": str(d), "bytes": size, "reason": reason})
        if not dry_run:
            shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()

    for d in sorted(root.iterdir()):
        kind = _leftover(d)
        if kind is not None:
            if now - d.lstat().st_mtime > _LEFTOVER_AGE_S:
                drop(d, kind)
            continue
        if d.is_symlink() or not d.is_dir() or not (d / META).is_file():
            continue
        if integrity.folder_problem(d, _raw_meta(d)) or is_locked(d):
            continue  # not ours to delete, or a running extraction
        try:
            complete = bool(read_meta(d).get("complete"))
        except CacheError:
            complete = False  # a damaged cache: it is collected like an incomplete one
        if complete or now - (d / META).stat().st_mtime < older_than_s:
            continue
        drop(d, "incomplete")
    for d in root.glob("*/.*.tmp*"):
        if d.is_file() and now - d.stat().st_mtime > _LEFTOVER_AGE_S:
            drop(d, "temp file")
    return removed
