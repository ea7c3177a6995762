"""Extraction spread over a Dask cluster: one task per chunk-aligned row range, written by a worker into the zarr
store, then recorded; the client publishes the cache when every range is recorded.

Each task builds the engine once per worker process (kept there for the next tasks), decodes its images, computes
the rows no other cache has, writes its whole region (no two tasks share a zarr chunk or shard, so no locks), makes
it durable, and writes its commit record (``commits/<split>/<start>.json``: rows and checksum). The client keeps
the cache lock for the whole run, records each landed range in ``meta.json`` and resumes an interrupted run from
the records, skipping committed ranges. Batches are grouped exactly as a single-process run groups them, so with
the same engine the features are the same bits.

Errors inside a task come back as values, not exceptions: Dask retries only what is worth retrying (a lost
worker is rescheduled by the scheduler), and a worker that cannot build the backbone reports once, not per task.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.cache.key import features_key
from bottleneck.cache.reuse import Donors
from bottleneck.cache.stores import open_store
from bottleneck.cache.writer import range_records, write_range_record
from bottleneck.config import ExtractConfig
from bottleneck.constraints import max_threads
from bottleneck.data.manifest import Manifest
from bottleneck.data.source import open_reader
from bottleneck.errors import BadImageError, BottleneckError, first_line, install_hint
from bottleneck.inference.bad_files import LateBadImage, load_or_late
from bottleneck.inference.chooser import choose_engine
from bottleneck.inference.pipeline import iter_groups
from bottleneck.inference.ranges import batch_groups, compute_range

DASK_MISSING = f"cluster= needs Dask; install it with: {install_hint('dask')} (dask and distributed)."
CONNECT_TIMEOUT_S = 10  # an unreachable scheduler fails after this, never hangs
_LOCAL = re.compile(r"^local(?::(\d+))?$")


class ClusterError(BottleneckError):
    """The cluster cannot be reached or used, or a task failed on a worker."""


def _dask():
    try:
        import distributed
    except ImportError:
        raise ClusterError(DASK_MISSING) from None
    return distributed


class Cluster:
    """A Dask client for ``spec``: ``local:N`` (N worker processes on this machine, started and stopped here) or a
    scheduler address (``tcp://HOST:8786``). A context manager."""

    def __init__(self, spec: str):
        self.spec = spec = str(spec).strip()
        distributed = _dask()
        self._cluster = None
        local = _LOCAL.match(spec)
        if local:
            n = int(local.group(1) or os.cpu_count() or 1)
            if not 1 <= n <= max_threads():
                raise ClusterError(
                    f"cluster={spec!r} asks for {n} worker processes; pass local:N with N from 1 to "
                    f"{max_threads()}, e.g. local:2."
                )
            self._cluster = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,  # one task at a time per process: the engine uses the cores itself
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            address = self._cluster
        elif "://" in spec:
            address = spec
        else:
            raise ClusterError(
                f"cluster={spec!r} is not a cluster; pass local:N (N worker processes here) or a scheduler "
                "address such as tcp://HOST:8786."
            )
        try:
            self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ClusterError(
                f"cannot reach the Dask scheduler at {spec} within {CONNECT_TIMEOUT_S} s ({first_line(exc)}); "
                "start it (`dask scheduler`) or check the address."
            ) from None

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class Job:
    """What every task of one run needs (small: it travels with each task)."""

    token: str  # the cache folder: a worker keeps one engine and one source reader per token
    config: ExtractConfig
    path: str  # the cache folder
    engine: str  # the engine the client selected: onnx | tensorflow | onnx-int8 | a custom factory's name
    engine_meta: dict  # what rebuilds an int8 engine (meta's int8, layers, splits)
    source: Manifest  # with no rows: the source's path, kind and class names
    options: dict  # how the source was opened
    feature_shape: tuple
    factory: object = None  # engine_factory of run_extraction (tests, custom engines), pickled to the workers


def check_cluster(config) -> None:
    """Fail on a cluster run that cannot work before reading any image: no Dask, or a store format that several
    processes cannot write."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ClusterError(DASK_MISSING)
    if config.format != "zarr":
        raise ClusterError(
            f"cluster= writes one shared zarr store; format={config.format!r} cannot take writes from several "
            "processes. Pass format='zarr' (the default) or leave cluster= out."
        )


def job_of(plan, engine, writer, factory=None) -> Job:
    """The Job of a run's plan (``inference.plan.Plan``), its selected engine and its writer's metadata."""
    keep = ("int8", "layers", "splits", "key_material")
    return Job(
        token=f"{plan.path}:{plan.key}:{engine.name}",
        config=plan.config,
        path=str(plan.path),
        engine=engine.name,
        engine_meta=writer.snapshot(keep),
        source=plan.manifest.take([]),
        options=plan.options,
        feature_shape=tuple(engine.feature_shape),
        factory=factory,
    )


# -- on the worker -------------------------------------------------------------------------------------------------
_STATE: dict = {}  # token -> (engine, source reader, store, donors): lives as long as the worker process


def _worker_state(job: Job):
    state = _STATE.get(job.token)
    if isinstance(state, Exception):
        raise state  # this worker could not set up this run: the same error, without building again
    if state is None:
        for old in _STATE.values():  # one run at a time per worker: free the previous run's engine
            if not isinstance(old, Exception):
                old[1].close()
                old[2].close()
                old[3].close()
        _STATE.clear()

        try:
            engine = _build_engine(job)
        except Exception as exc:
            _STATE[job.token] = exc
            raise
        reader = open_reader(job.source, **job.options)
        store = open_store("zarr", job.path, "w")
        material = job.engine_meta.get("key_material") or {}
        donors = Donors(Path(job.path).parent, features_key(material), exclude=Path(job.path))
        state = _STATE[job.token] = (engine, reader, store, donors)
    return state


def _build_engine(job: Job):
    config = job.config
    if job.factory is not None:
        return job.factory(config)

    cache_dir = Path(job.path).parent
    if job.engine == "onnx-int8":
        return choose_engine(config, cache_dir, int8_meta=job.engine_meta)
    if job.engine == "onnx":
        engine = choose_engine(config.replace(engine="onnx"), cache_dir, verified_only=True)
        if engine is None:
            raise ClusterError(
                f"the verified ONNX model is not in {cache_dir / 'engines'} as this worker sees it; put the cache "
                "folder on storage every worker shares."
            )
        return engine
    return choose_engine(config.replace(engine="tensorflow"), cache_dir)  # what the client ran: TensorFlow


def run_range(job: Job, split: str, start: int, items: list, todo: list) -> dict:
    """One task: rows [start, start + len(items)) of ``split`` computed (``todo`` positions; the others come from
    donor caches), written, made durable and recorded. Returns {"ok": rows, ...} or {"error": line}."""
    try:
        return _run_range(job, split, start, items, todo)
    except (
        Exception
    ) as exc:  # returned, not raised: a deterministic failure must not be retried on every worker
        if isinstance(exc, LateBadImage):
            return {"bad": [exc.item.id, exc.reason]}
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {
            "error": f"{first_line(exc)} ({type(exc).__name__} at {Path(where.filename).name}:{where.lineno})"
        }


def _run_range(job: Job, split: str, start: int, items: list, todo: list) -> dict:

    engine, reader, store, donors = _worker_state(job)
    config = job.config

    def load(item):
        return load_or_late(reader, item, engine.input_size, config)

    out = np.empty((len(items), *job.feature_shape), dtype=config.dtype)
    # The client chose ``todo`` from the donors it saw; a row this worker's donors lack is computed too.
    todo = sorted(set(todo).union(donors.missing([it.hash for it in items])))
    stream = iter_groups(
        load, batch_groups([(items, todo)], config.batch_size), workers=config.workers or _tf.cpu_count()
    )
    try:
        compute_range(engine, donors, items, todo, stream, out)
    finally:
        stream.close()
    store.write(split, start, out)
    store.flush()
    record = write_range_record(job.path, split, start, out, computed=len(todo))
    return {"ok": len(items), **record}


# -- on the client -------------------------------------------------------------------------------------------------
def compute_on_cluster(cluster: Cluster, job: Job, manifest, writer, donors, counts, progress) -> None:
    """Every uncommitted range of every split as one task; returns when the writer has recorded them all.

    Splits must exist in the store already (``writer.create_split``). Ranges whose rows all come from donor
    caches are copied here, without a task. Raises ClusterError (a task's error, a worker lost too often) or
    BadImageError (an image damaged past its header), leaving every recorded range for a resume."""
    from distributed import as_completed

    tasks = {}
    landed: dict[str, int] = {}
    for split in manifest.splits():
        items = manifest.items_of(split)
        n, info = len(items), writer.split(split)
        step = info["shard_rows"] or info["chunk_rows"]  # whole shards: one writer per stored object
        done = _adopt_records(writer, split, step)
        landed[split] = sum(min(step, n - s) for s in done)
        counts.resumed_from += landed[split]
        if progress:
            progress(split, landed[split], n)
        for start in range(0, n, step):
            if start in done:
                continue
            chunk = list(items[start : start + step])
            todo = donors.missing([it.hash for it in chunk])
            if not todo:  # nothing to compute: copy the donors' rows here
                out = np.empty((len(chunk), *job.feature_shape), dtype=job.config.dtype)
                donors.fill(out, [it.hash for it in chunk])
                writer.land(split, start, out)
                counts.reused += len(chunk)
                landed[split] += len(chunk)
                continue
            future = cluster.client.submit(
                run_range,
                job,
                split,
                start,
                chunk,
                todo,
                pure=False,
                key=f"bottleneck-{split}-{start}-{job.token}",
            )
            tasks[future] = (split, start, len(chunk))
    if not tasks:
        return
    pending = as_completed(list(tasks), loop=cluster.client.loop)
    try:
        for future in pending:
            split, start, rows = tasks[future]
            result = _result(future, split, start, rows)
            _record(writer, split, start, result["stop"], result["digest"])
            counts.computed += result["computed"]
            counts.reused += rows - result["computed"]
            landed[split] += rows
            if progress:
                progress(split, landed[split], writer.split(split)["n"])
    finally:
        cluster.client.cancel([f for f in tasks if not f.done()])


def _result(future, split: str, start: int, rows: int) -> dict:
    from distributed import KilledWorker

    where = f"{split} rows {start}-{start + rows}"
    try:
        result = future.result()
    except KilledWorker:
        raise ClusterError(
            f"workers died repeatedly while computing {where} (out of memory?); the ranges done so far are kept. "
            "Give the workers more memory or use a smaller --batch-size, then run the same command to resume."
        ) from None
    if "bad" in result:
        ident, reason = result["bad"]
        raise BadImageError(
            f"unreadable image {ident} ({reason}) found by a worker at {where}; fix or remove it and run the same "
            "command again (the ranges done so far are kept). On a cluster, a file damaged past its header stops "
            "the run even with on_bad_image='skip', which leaves out files whose header shows the damage.",
            [ident],
        )
    if "error" in result:
        raise ClusterError(f"a worker failed on {where}: {result['error']}")
    return result


def _adopt_records(writer, split: str, step: int) -> set[int]:
    """Starts of the ranges of ``split`` already durable: the committed prefix of a single-process run, and the
    ranges with a task's commit record (also when the client stopped before it saw them land)."""

    n = writer.split(split)["n"]
    prefix = writer.committed(split)
    done = {s for s in range(0, prefix, step) if min(s + step, n) <= prefix}
    known = writer.recorded_starts(split)
    for start, (stop, digest) in range_records(writer.path, split).items():
        if start % step == 0 and stop == min(start + step, n):
            done.add(start)
            if start not in known:
                _record(writer, split, start, stop, digest, save=False)
    return done


def _record(writer, split: str, start: int, stop: int, digest: str, save: bool = True) -> None:
    """A landed range: its checksum and the committed prefix it extends, recorded by the cache's writer."""
    writer.record_range(split, start, stop, digest, save=save)
