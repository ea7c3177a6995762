"""Whole-cache checks: every feature region, label and id of a cache (``cache verify``), and the check a cache hit
makes before it is trusted (only the data files changed since the last check that found the cache whole)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bottleneck.cache import integrity
from bottleneck.cache.integrity import READ_ERRORS, CacheDamaged, rows_digest
from bottleneck.cache.meta import read_meta
from bottleneck.cache.reader import Cache


@dataclass(frozen=True)
class Problem:
    """Damage found in a cache: rows [start, stop) of ``split`` (None: the whole cache or split) and why."""

    split: str | None
    start: int | None
    stop: int | None
    reason: str

    def as_dict(self) -> dict:
        return {"split": self.split, "start": self.start, "stop": self.stop, "reason": self.reason}

    def __str__(self) -> str:
        where = self.split or "cache"
        if self.start is not None:
            where += f" rows {self.start}-{self.stop}"
        return f"{where}: {self.reason}"


def _problem(exc: CacheDamaged, reason: str | None = None) -> Problem:
    text = reason or str(exc).split(" is damaged: ", 1)[-1].split(". Run ", 1)[0]
    return Problem(exc.split, exc.start, exc.stop, text)


def check_cache(cache: Cache, splits=None, progress=None) -> tuple[list[Problem], int]:
    """(problems, regions read) of every split in ``splits`` (default all): row counts, labels, ids, and every
    feature region read in full and compared with its checksum. Reads nothing twice; never raises for damage."""
    problems: list[Problem] = []
    splits = list(cache.splits if splits is None else splits)
    total = sum(len(cache.meta.get("checksums", {}).get(s, [])) for s in splits)
    done = 0
    for split in splits:
        for column in (cache.labels, cache.ids):
            try:
                column(split)
            except CacheDamaged as exc:
                problems.append(_problem(exc))
        try:
            features = cache.features(split, verify=False)
        except CacheDamaged as exc:
            problems.append(_problem(exc))
            continue
        regions = cache.regions(split)
        problems += [Problem(split, a, b, why) for a, b, why in regions.problems()]
        for i, (start, stop) in enumerate(zip(regions.starts.tolist(), regions.stops.tolist(), strict=True)):
            try:
                rows = features[start:stop]
            except READ_ERRORS as exc:
                problems.append(Problem(split, start, stop, f"unreadable ({type(exc).__name__}: {exc})"))
            else:
                if rows_digest(rows) != regions.digests[i]:
                    problems.append(Problem(split, start, stop, "checksum mismatch"))
                else:
                    regions.ok[i] = True
            done += 1
            if progress:
                progress("verify", done, total)
    return problems, done


def _splits_of(cache: Cache, changed: set[str]) -> list[str]:
    """The splits whose data files are among ``changed`` (every split when a shared file changed)."""
    data = cache.store.data_name
    hit = set()
    for rel in changed:
        parts = rel.split("/")
        if parts[0] == data and len(parts) > 2 and parts[1] in cache.splits:
            hit.add(parts[1])
        elif rel != "manifest.npz" or len(parts) != 1:
            return list(cache.splits)
    return [s for s in cache.splits if s in hit]


def hit_problems(path) -> list[Problem]:
    """The damage of the complete cache folder ``path`` that a hit must not hand out: its metadata, its manifest,
    and the splits whose data files changed since the last check that found them whole (all of them when there
    is no such check). A cache found whole is recorded as such, so the next hit reads no data at all."""
    path = Path(path)
    try:
        cache = Cache(path, read_meta(path))
    except CacheDamaged as exc:
        return [Problem(None, None, None, str(exc))]
    try:
        changed = integrity.changed_files(path)
        if changed == set():
            return []
        cache.manifest()
        splits = cache.splits if changed is None else _splits_of(cache, changed)
        problems, _ = check_cache(cache, splits)
    except CacheDamaged as exc:
        problems = [_problem(exc)]
    finally:
        cache.close()
    if not problems:
        integrity.write_witness(path)
    return problems
