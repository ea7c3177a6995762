"""Computing a planned extraction: rows in chunk-aligned ranges, each filled by ``ranges.compute_range`` (donors'
rows copied, the others run through the engine), in this process or as tasks on a Dask cluster, committed and
published."""

from __future__ import annotations

import errno
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.cache import Cache, CacheWriter, read_meta
from bottleneck.cache.key import features_key
from bottleneck.cache.reuse import Donors
from bottleneck.errors import CacheError, ExtractionInterrupted
from bottleneck.inference.bad_files import LateBadImage, drop_late, load_or_late
from bottleneck.inference.distributed import compute_on_cluster, job_of
from bottleneck.inference.pipeline import iter_groups
from bottleneck.inference.plan import Plan, chunk_rows_for
from bottleneck.inference.ranges import batch_groups, compute_range


@dataclass
class Counts:
    computed: int = 0  # rows run through the backbone
    resumed_from: int = 0  # rows committed by an interrupted earlier run
    reused: int = 0  # rows copied from other caches
    visited: set = field(default_factory=set)  # splits whose resumed rows are counted
    # [{"index", "id", "reason"}]: the plan's, and images that failed late
    skipped: list = field(default_factory=list)


def open_writer(plan: Plan, engine) -> CacheWriter:
    if plan.resume_meta is not None:
        return CacheWriter.reopen(plan.path, plan.resume_meta)
    writer = CacheWriter(
        plan.path,
        key=plan.key,
        key_material=plan.material,
        config=plan.config,
        class_names=plan.manifest.class_names,
        manifest=plan.full,
        skipped=plan.skipped,
    )
    writer.describe_engine(engine)
    return writer


def compute(plan: Plan, src, engine, progress, t0: float, cluster=None, factory=None) -> tuple[Cache, Counts]:
    """Every split, range by range, into the cache (here, or as tasks on a ``cluster``); the cache published
    complete (``finish``) and what was computed, reused, resumed and skipped (``Counts``)."""
    import time

    writer = open_writer(plan, engine)
    counts = Counts()
    donors = Donors(plan.path.parent, features_key(plan.material), exclude=plan.path)
    try:
        if cluster is not None:
            for split in plan.manifest.splits():
                open_split(plan, engine, writer, split)
            job = job_of(plan, engine, writer, factory)
            compute_on_cluster(cluster, job, plan.manifest, writer, donors, counts, progress)
        else:
            while True:
                try:
                    for split in plan.manifest.splits():
                        compute_split(plan, src, engine, writer, donors, split, counts, progress)
                    break
                except LateBadImage as late:
                    plan = drop_late(plan, src, writer, late, progress)
    except BaseException as exc:
        try:
            writer.abort()
        except OSError:  # closing may flush into the same full disk; what was committed is already durable
            pass
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, ExtractionInterrupted):
            raise ExtractionInterrupted(
                f"stopped at a chunk boundary with {writer.rows_saved()}/{len(plan.manifest)} rows saved in "
                f"{plan.path}; re-run the same command to resume."
            ) from None
        raise
    finally:
        donors.close()
    extra = {
        "engine": writer.engine_name or engine.name,
        "engine_difference": engine.verification.difference if engine.verification else None,
        "extract_seconds": round(time.perf_counter() - t0, 3),
        "source": plan.manifest.source,
        "source_options": plan.options,
        "features_key": features_key(plan.material),
    }
    counts.skipped = plan.skipped  # images dropped while computing are in the last plan
    return writer.finish(extra), counts


def open_split(plan: Plan, engine, writer: CacheWriter, split: str) -> tuple[int, int]:
    """(chunk rows, committed rows) of ``split`` in the store, created there when new."""
    info = writer.split(split)
    if info is not None:
        return info["chunk_rows"], writer.committed(split)
    config = plan.config
    chunk_rows = plan.chunk_rows or chunk_rows_for(config.batch_size, engine.feature_shape, config.dtype)
    if config.shard_rows:
        chunk_rows = _dividing(chunk_rows, config.shard_rows, config.batch_size)
    rows = plan.manifest.rows_of(split)
    labels, ids = plan.manifest.label[rows], plan.manifest.id[rows].tolist()
    writer.create_split(split, len(rows), engine.feature_shape, config.dtype, labels, ids, chunk_rows)
    return chunk_rows, 0


def _dividing(chunk_rows: int, shard_rows: int, batch_size: int) -> int:
    """The largest chunk (a multiple of the batch size, at most ``chunk_rows``) that divides ``shard_rows``: a shard
    holds whole chunks, so a chunk larger than the shard would make every shard as large as a chunk (``shard_rows
    64`` would store 2 048 rows per object) instead of what was asked."""
    return max(
        r for r in range(batch_size, min(chunk_rows, shard_rows) + 1, batch_size) if shard_rows % r == 0
    )


def compute_split(plan: Plan, src, engine, writer, donors, split: str, counts: Counts, progress) -> None:
    """One split in this process: its uncommitted chunks as ranges, one decoding stream across them (decoding
    runs ahead across commits), each range committed in a background thread while the next computes (one commit
    in flight; they land in order)."""

    config = plan.config
    items = plan.manifest.items_of(split)
    n = len(items)
    chunk_rows, done = open_split(plan, engine, writer, split)
    if split not in counts.visited:  # a split is visited again after an image of a later one was dropped
        counts.visited.add(split)
        counts.resumed_from += done
    if progress:
        progress(split, done, n)

    def load(item):
        image = plan.preloaded.pop(item.id, None)
        return image if image is not None else load_or_late(src, item, engine.input_size, config)

    # chunk_rows is a multiple of the batch size, so a resumed run starts on a batch boundary of the
    # uninterrupted one and groups images identically.
    ranges = []
    for start in range(done, n, chunk_rows):
        chunk = items[start : start + chunk_rows]
        ranges.append((start, chunk, donors.missing([it.hash for it in chunk])))
    groups = batch_groups([(chunk, todo) for _, chunk, todo in ranges], config.batch_size)
    stream = iter_groups(load, groups, workers=config.workers or _tf.cpu_count())

    def commit(start, chunk, todo, out):
        writer.write(split, start, out)
        writer.commit(split, start + len(chunk))
        # Counted at the commit: a chunk restarted after a dropped image is not counted twice.
        counts.computed += len(todo)
        counts.reused += len(chunk) - len(todo)
        return start + len(chunk)

    def landed(future):
        rows = future.result()
        if progress:
            progress(split, rows, n)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as committer:
        pending = None
        try:
            for start, chunk, todo in ranges:
                out = np.empty((len(chunk), *engine.feature_shape), dtype=config.dtype)
                before = start + len(chunk) - len(todo)
                on_batch: Callable | None = (
                    (lambda k, b=before: progress(split, b + k, n)) if progress else None
                )
                compute_range(engine, donors, chunk, todo, stream, out, on_batch)
                if pending is not None:
                    landed(pending)
                pending = committer.submit(commit, start, chunk, todo, out)
        finally:
            stream.close()
            if pending is not None:  # what was computed before an error is still committed
                landed(pending)


# Errors of a full disk, a quota, or a read-only / forbidden cache folder: the user can fix these and resume.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def write_errors(cache_dir, path: Path):
    """A full disk or an unwritable cache folder becomes one CacheError saying what is saved and how to resume."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        raise CacheError(
            f"cannot write the cache under {Path(cache_dir)}: {exc.strerror or exc}"
            f"{_saved_so_far(path)}. Free space or make the folder writable (or pass another "
            "cache_dir=), then re-run the same command to resume."
        ) from None


def _saved_so_far(path: Path) -> str:
    try:
        meta = read_meta(path)
    except (CacheError, OSError):
        meta = None
    if not meta or not meta.get("splits"):
        return " (nothing was saved yet)"
    done = sum(meta.get("progress", {}).values())
    total = sum(s["n"] for s in meta["splits"].values())
    return f" ({done}/{total} rows are saved in {path})"
