"""Cache management: list, verify, remove, garbage-collect."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck import _ownership
from bottleneck.cache import integrity
from bottleneck.cache.health import check_cache
from bottleneck.cache.integrity import META, CacheDamaged
from bottleneck.cache.lock import is_locked
from bottleneck.cache.meta import LEGACY_MANIFEST, MANIFEST, manifest_source, progress_text, read_meta
from bottleneck.cache.reader import Cache
from bottleneck.cache.stores import STORES
from bottleneck.cache.writer import COMMITS
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


# What a cache folder holds at its top level: its metadata, witness and manifest, each store's data, the commit
# records of cluster tasks, and the hidden temp files of atomic writes (``_io.temp_path``). Anything else in it
# was put there by someone else and is never deleted with the cache.
_CACHE_ENTRIES = frozenset(
    {integrity.META, integrity.WITNESS, MANIFEST, LEGACY_MANIFEST, COMMITS}
    | {store.data_name for store in STORES.values()}
)
_TEMP = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp(?:\..+)?$"
)  # ``_io.temp_path``: .<name>.<pid>.tmp[.suffix]


def foreign_entries(path: Path) -> list[str]:
    """Top-level entries of the cache folder ``path`` that no cache writer makes (a user's notes, ...)."""
    return sorted(
        p.name
        for p in path.iterdir()
        if not (p.name in _CACHE_ENTRIES and not p.is_symlink()) and not _TEMP.match(p.name)
    )


def _sealed_problem(path: Path) -> str | None:
    """Why ``path`` is not a cache by its own sealed record: a cache's meta.json, a seal that matches (caches of
    format 1 have none), a folder named after the key."""
    raw = _raw_meta(path)
    problem = integrity.folder_problem(path, raw)
    if problem:
        return problem
    try:
        integrity.check_meta(path, raw)
    except CacheDamaged:
        return f"its {META} was changed after bottleneck wrote it (the seal does not match)"
    return None


def check_removable(path, *, force: bool = False) -> Path:
    """``path`` when it is a cache folder `cache rm` may delete; CacheError (one line) otherwise. A cache folder
    holding files no cache writer makes is refused unless ``force`` (which then deletes only the cache's own
    entries and leaves those files)."""
    path = Path(path)
    if path.is_symlink():
        raise CacheError(
            f"{path} is a symbolic link; remove the link itself, or pass the folder it points to."
        )
    if not path.is_dir():
        raise CacheError(f"no cache folder at {path}; pass a folder listed by `bottleneck cache ls`.")
    problem = _sealed_problem(path)
    if problem:
        raise CacheError(
            f"refusing to delete {path}: {problem}. Only folders made by `bottleneck extract` are removed; "
            "delete it by hand if you are sure."
        )
    if is_locked(path):
        raise CacheError(
            f"refusing to delete {path}: an extraction is writing it; wait for it or stop it first."
        )
    foreign = foreign_entries(path)
    if foreign and not force:
        shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise CacheError(
            f"refusing to delete {path}: it also holds files bottleneck did not write ({shown}). Move them out "
            "first, or pass force=True to delete only the cache's own files and keep those."
        )
    return path


def clear_for_rewrite(path) -> None:
    """Delete the folder of a cache this process is about to write again (its lock held: ``extract --force``, a
    complete or unreadable folder of this key); refused in one line when someone put other files in it."""
    path = Path(path)
    foreign = foreign_entries(path)
    if foreign:
        raise CacheError(
            f"{path} holds files bottleneck did not write ({', '.join(foreign[:5])}); move them out of the cache "
            "folder and run again."
        )
    shutil.rmtree(path)


def remove_cache(path, *, force: bool = False) -> int:
    """Delete a cache folder; returns the bytes freed. Refuses folders that are not caches by their sealed
    metadata and caches an extraction is writing; files a user put in the folder are never deleted (the folder
    is refused, or with ``force`` kept with only those files)."""
    path = check_removable(path, force=force)
    foreign = set(foreign_entries(path))
    size = 0
    for entry in path.iterdir():
        if entry.name in foreign:
            continue
        size += dir_size(entry) if entry.is_dir() else entry.stat().st_size
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if not foreign:
        path.rmdir()
    lock = path.parent / f".{path.name}.lock"
    lock.unlink(missing_ok=True)
    return size


_LEFTOVER_AGE_S = 3600


def _leftover(d: Path) -> str | None:
    """What the hidden entry ``d`` of a cache root is, when bottleneck's own record says bottleneck made it and
    no living writer holds it: a killed writer's temp file or folder, or a damaged cache set aside."""
    name = d.name
    if not name.startswith(".") or d.is_symlink():
        return None
    if d.is_dir() and _ownership.is_leftover_dir(d):
        return "temp folder"
    temp = _TEMP.match(name)
    if temp and d.is_file() and not _ownership.is_alive(int(temp["pid"])):
        return "temp file"
    aside = re.fullmatch(rf"\.(?P<name>.+){re.escape(integrity.DAMAGED)}-\d+", name)
    if aside and d.is_dir() and _set_aside_problem(d, aside["name"]) is None:
        return "damaged cache set aside"
    return None


def _set_aside_problem(d: Path, original: str) -> str | None:
    """Why the hidden folder ``d`` is not a cache set aside from the name ``original`` (sealed as a cache of it)."""
    raw = _raw_meta(d)
    problem = integrity.folder_problem(d.with_name(original), raw)
    if problem:
        return problem
    try:
        integrity.check_meta(d, raw)
    except CacheDamaged:
        return "its seal does not match"
    return None


def gc_caches(cache_dir="cache", *, older_than_s: float = 24 * 3600, dry_run: bool = False) -> list[dict]:
    """Remove incomplete caches older than a threshold, and what killed writers left (temp files and folders,
    caches set aside as damaged; older than an hour), in ``cache_dir`` only when it is a cache root by its own
    record (``_ownership.mark_root``, written by extract). Only caches by their sealed metadata are removed, never with
    a file no cache writer makes inside. Returns what was removed."""
    root = Path(cache_dir)
    removed = []
    now = time.time()
    if not root.is_dir():
        if root.exists():
            raise CacheError(
                f"cache_dir={str(root)!r} is a file, not a folder; pass the folder of the caches."
            )
        return removed
    problem = _ownership.root_problem(root, integrity.CACHE_ROOT)
    if problem:
        raise CacheError(
            f"refusing to collect anything in {root}: {problem}, so it is no cache folder by bottleneck's "
            "record. Pass cache_dir=FOLDER, the folder `bottleneck extract` writes caches to."
        )

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
        if _sealed_problem(d) or is_locked(d) or foreign_entries(d):
            continue  # not ours to delete, a running extraction, or a user's files inside
        complete = bool((_raw_meta(d) or {}).get("complete"))
        if complete or now - (d / META).stat().st_mtime < older_than_s:
            continue
        drop(d, "incomplete")
    for d in root.glob("*/.*.tmp*"):
        if d.parent.is_symlink() or _sealed_problem(d.parent):
            continue  # only inside caches
        temp = _TEMP.match(d.name)
        if (
            temp
            and d.is_file()
            and not d.is_symlink()
            and now - d.stat().st_mtime > _LEFTOVER_AGE_S
            and not _ownership.is_alive(int(temp["pid"]))
        ):
            drop(d, "temp file")
    return removed
