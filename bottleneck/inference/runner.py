"""The extraction runner: source -> manifest -> key -> (hit | engine over the input pipeline -> store)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.backbones import get_spec
from bottleneck.backbones.build import require_preprocess
from bottleneck.backbones.model_file import is_model_path
from bottleneck.cache import META, Cache, CacheWriter, compute_key, integrity, open_cache, read_meta
from bottleneck.cache.health import Problem, check_cache, hit_problems
from bottleneck.cache.key import features_key
from bottleneck.cache.lock import cache_lock
from bottleneck.cache.reader import find_cache_path
from bottleneck.cache.reuse import Donors
from bottleneck.callbacks import Notify, Progress
from bottleneck.config import ExtractConfig
from bottleneck.data.hash_index import HashIndex, index_path
from bottleneck.errors import BackboneError, BottleneckError, CacheError, ExtractionInterrupted
from bottleneck.inference.bad_files import (
    LateBadImage,
    drop_late,
    header_bad_files,
    load_or_late,
    rows_without,
)

# Aim for chunks of a few MB: big enough to compress well, small enough that a crash loses little.
CHUNK_BYTES = 8 << 20
INDEX_DIR = "index"  # under the cache folder: one hash index per source


def read_once_budget() -> int:
    """Bytes of image files kept in memory from the hashing pass for the decoding pass, so each file is read
    once: 1 GiB, or an eighth of the machine's memory when that is less. A larger dataset has the rest of its
    files read a second time (from the OS page cache when they fit there)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        memory = 8 << 30
    return int(min(1 << 30, memory // 8))


@dataclass
class ExtractResult:
    cache: Cache
    hit: bool  # True when an existing complete cache was reused and nothing was computed
    seconds: float
    computed: int = 0  # rows run through the backbone in this call
    resumed_from: int = 0  # rows already committed by an interrupted earlier run
    reused: int = 0  # rows copied from another cache of the same backbone settings (matched by content hash)
    skipped: list = field(default_factory=list)  # [{"id", "reason"}] images left out with on_bad_image="skip"
    engine: str | None = None
    url: str | None = (
        None  # the cache in the bucket, for a cache_dir URL (``path`` is its local staging copy)
    )

    @property
    def path(self) -> Path:
        return self.cache.path

    def summary(self) -> dict:
        """The JSON shape of `bottleneck extract --json`."""
        return {
            "path": str(self.cache.path),
            **({"url": self.url} if self.url else {}),
            "key": self.cache.key,
            "hit": self.hit,
            "seconds": round(self.seconds, 3),
            "computed": self.computed,
            "reused": self.reused,
            "skipped": len(self.skipped),
            "engine": self.engine or self.cache.meta.get("engine"),
            "splits": {
                s: {"n": self.cache.n(s), "feature_shape": list(self.cache.feature_shape)}
                for s in self.cache.splits
            },
        }


def chunk_rows_for(batch_size: int, feature_shape, dtype: str) -> int:
    row_bytes = int(np.prod(feature_shape)) * np.dtype(dtype).itemsize
    return batch_size * max(1, min(64, CHUNK_BYTES // max(1, batch_size * row_bytes)))


def _check_backbone(config: ExtractConfig) -> None:
    """Fail on a bad backbone name, weights path or device before reading any image."""
    from bottleneck.inference.engines import check_device

    check_device(config)
    if is_model_path(config.backbone):
        if not Path(config.backbone).exists():
            raise BackboneError(
                f"model file {config.backbone} does not exist; pass a .keras/.h5 file or a registry name."
            )
        require_preprocess(config.backbone, config.preprocess)
        return
    spec = get_spec(config.backbone)
    if spec.weights == "none" and config.weights not in ("imagenet", "none"):
        raise BackboneError(f"{spec.name} has no weights; leave out weights={config.weights!r}.")
    if config.weights not in ("imagenet", "none") and not Path(config.weights).exists():
        raise BackboneError(
            f"weights file {config.weights} does not exist; pass weights='imagenet', 'none', or the path of a "
            "local weights file."
        )


def extract(
    source,
    config: ExtractConfig | None = None,
    *,
    cache_dir="cache",
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    h5_keys=None,
    pilot: dict | None = None,
    rehash: bool = False,
    cluster: str | None = None,
    **overrides,
) -> ExtractResult:
    """Extract features of every image of every split once; reuse the cache when the key matches.

    ``source`` is a folder of class folders (optionally under train/val/test), a .h5 / .npz file, a folder of
    .npy pairs or IDX files, or a CSV of path,label[,split]. ``overrides`` are ExtractConfig fields
    (``backbone="vgg16", pooling="none"`` ...). ``val_fraction`` carves a stratified, ``seed``-ed val split out
    of train when the source has none. ``pilot={"per_class": N, "seed": s}`` extracts a stratified sample
    (``bottleneck.data.manifest.pilot``). Image files whose size and times are unchanged since an earlier run
    under ``cache_dir`` are not read again (a hash index per source, like git's); ``rehash=True`` reads and hashes
    every file anyway. ``source`` and ``cache_dir`` may be URLs (``s3://bucket/prefix``; ``bottleneck.storage``):
    the source is mirrored locally (changed objects only), the cache built in a local staging folder and
    published to the bucket when complete (``ExtractResult.url``). ``cluster`` spreads the computing over a Dask cluster (``"local:N"`` worker processes, or
    a scheduler address ``"tcp://HOST:8786"``; zarr caches only; needs ``bottleneck[dask]``): the same features,
    bit for bit. ``progress(stage, done, total)`` and ``notify(line)`` report progress.
    Returns an ExtractResult whose ``cache`` holds per split ``features`` (N x feature_shape), ``labels`` (N,)
    and ``ids`` (N,).
    """
    return run_extraction(
        source,
        config,
        cache_dir=cache_dir,
        force=force,
        progress=progress,
        notify=notify,
        val_fraction=val_fraction,
        seed=seed,
        h5_keys=h5_keys,
        pilot=pilot,
        rehash=rehash,
        cluster=cluster,
        **overrides,
    )


def run_extraction(
    source,
    config: ExtractConfig | None = None,
    *,
    cache_dir="cache",
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    h5_keys=None,
    pilot: dict | None = None,
    engine_factory: Callable | None = None,
    chunk_rows: int | None = None,
    rehash: bool = False,
    cluster: str | None = None,
    **overrides,
) -> ExtractResult:
    """``extract`` with the hooks tests and benchmarks need: ``engine_factory(config)`` returns the Engine to use
    (default: the verified ONNX model or TensorFlow), ``chunk_rows`` (a multiple of the batch size) sets the
    commit granularity, otherwise a few MB of features."""
    from bottleneck.data import open_source

    t0 = time.perf_counter()
    config = (config or ExtractConfig()).replace(**overrides)
    _check_backbone(config)
    if cluster is not None:
        from bottleneck.inference.distributed import check_cluster

        check_cluster(config)
    if chunk_rows is not None and (chunk_rows < 1 or chunk_rows % config.batch_size):
        raise BottleneckError(
            f"chunk_rows={chunk_rows} must be a positive multiple of batch_size={config.batch_size}."
        )
    options = {"h5_keys": h5_keys, "val_fraction": val_fraction, "seed": seed}
    if pilot is not None:
        options["pilot"] = dict(pilot)
    if config.max_image_pixels is not None:
        options["max_image_pixels"] = config.max_image_pixels
    from bottleneck import storage

    source, remote, cache_dir = storage.stage(source, cache_dir, progress)
    if Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise CacheError(
            f"cache_dir={str(cache_dir)!r} is a file, not a folder; pass a folder for the caches."
        )
    index = HashIndex(index_path(Path(cache_dir) / INDEX_DIR, source), rehash=rehash)
    with open_source(source, keep_bytes=read_once_budget(), hash_index=index, **options) as src:
        config = _resolved(config, src)
        key, material = compute_key(config, src.manifest.fingerprint(), _calibration_material(config, src))
        path = find_cache_path(cache_dir, config, key)

        damage: list[Problem] = []

        def hit() -> ExtractResult | None:
            """The complete cache of this key, here or (fetched) from a cache_dir URL; published when missing. A
            complete cache whose data changed since it was last found whole is checked first: damage is no hit."""
            if force:
                return None
            if remote is not None and not _is_complete(path):
                remote.fetch(path.name, progress)
            if not _is_complete(path):
                return None
            damage[:] = hit_problems(path)
            if damage:
                return None
            _save_index(index)
            if remote is not None and not remote.is_complete(path.name):
                remote.publish(path.name, progress)
            return ExtractResult(
                open_cache(path),
                hit=True,
                seconds=time.perf_counter() - t0,
                url=remote and remote.url_of(path.name),
            )

        found = hit()
        if found is not None:
            return found
        lease = remote.lease(path.name, notify) if remote is not None else contextlib.nullcontext()
        with _write_errors(cache_dir, path), cache_lock(path, notify), lease:
            found = hit()  # another process finished it while we waited
            if found is not None:
                return found
            if force and path.exists():
                shutil.rmtree(path)  # find_cache_path gave a folder of this key (or none): ours to replace
            aside = _set_aside(path, damage, notify)
            try:
                plan = _plan(src, config, key, material, path, options, chunk_rows, progress, notify)
            finally:
                _save_index(index)  # with the header checks of this miss, also when they stop the run
            engine = _engine(plan, src, notify, engine_factory)
            if cluster is None:
                result = _compute(plan, src, engine, progress, t0)
            else:
                from bottleneck.inference.distributed import Cluster

                with Cluster(cluster) as dask:
                    if notify:
                        notify(f"computing on {dask.workers} Dask worker(s) at {cluster}")
                    result = _compute(plan, src, engine, progress, t0, dask, engine_factory)
            for folder in aside:  # its good rows are in the new cache now
                shutil.rmtree(folder, ignore_errors=True)
            if remote is not None:
                remote.publish(path.name, progress)
                result.url = remote.url_of(path.name)
            return result


def _save_index(index: HashIndex) -> None:
    try:
        index.save()
    except OSError:  # a read-only cache folder: the next run reads the files again, nothing worse
        pass


# The pixels baseline's largest side: 32x32x3 = 3072 values, still quick for a logistic regression.
PIXELS_SIDE = 32


def _resolved(config: ExtractConfig, src) -> ExtractConfig:
    """Settings that depend on the source, made explicit before the key: the ``pixels`` baseline has no
    weights, and keeps images at their own side when that is below PIXELS_SIDE (upscaling adds no information)."""
    if is_model_path(config.backbone) or get_spec(config.backbone).weights != "none":
        return config
    changes = {"weights": "none"}
    if config.image_size is None:
        # From a header, not a decode: the first readable image's side (none readable: the bad-image check says so).
        sides = (src.min_side(it) for it in src.manifest.items)
        side = next((s for s in sides if s is not None), None)
        if side is not None:
            changes["image_size"] = max(16, min(PIXELS_SIDE, side))
    return config.replace(**changes)


def _calibration_material(config: ExtractConfig, src) -> dict:
    """int8 features depend on the calibration images: their identity joins the key (none for fp32)."""
    if config.precision != "int8":
        return {}
    from bottleneck.inference.quantize import calibration_hash, calibration_items, int8_weights

    material = {"calibration_ids": calibration_hash(calibration_items(src.manifest, config.calibration))}
    weights = int8_weights()
    if weights != "s8":  # another model, other features; s8 caches keep the keys they had
        material["int8_weights"] = weights
    return material


def _is_complete(path: Path) -> bool:
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and bool(meta.get("complete"))


def _describe(problems: list[Problem]) -> str:
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


def _set_aside(path: Path, damage: list[Problem], notify) -> list[Path]:
    """A complete cache of this key that a hit found damaged: moved aside (hidden) so that the extraction that
    replaces it reuses its rows that still match their checksums and computes only the others."""
    if not damage or not path.exists():
        return []
    if notify:
        notify(f"cache {path.name} is damaged ({_describe(damage)}); computing the damaged rows again")
    return [integrity.set_aside(path)]


@dataclass
class _Plan:
    """What a (new or resumed) extraction writes, decided before any image is computed."""

    config: ExtractConfig  # with the batch size and engine of an interrupted run when resuming
    key: str
    material: dict  # what the key hashes
    path: Path
    manifest: object  # without skipped images: one row per item
    full: object  # every source item, skipped ones included (the cache's manifest file)
    skipped: list  # [{"index", "id", "reason"}]
    resume_meta: dict | None  # the interrupted run's metadata, or None for a fresh cache
    options: dict  # how the source was opened (recorded so `cache verify` can reopen it)
    chunk_rows: int | None
    preloaded: dict = field(default_factory=dict)  # id -> resized image the engine probe decoded already


def _plan(src, config, key, material, path, options, chunk_rows, progress, notify=None) -> _Plan:
    resume_meta = _resumable_meta(path, notify)
    if resume_meta is None:
        skipped = header_bad_files(src, config, progress)
    else:
        skipped = resume_meta.get("skipped", [])
        # Resume with the batch size and engine of the interrupted run, so batches (and values) are identical.
        stored_engine = resume_meta.get("engine")
        config = config.replace(
            batch_size=resume_meta["config"]["batch_size"],
            engine=stored_engine if stored_engine in ("tensorflow", "onnx") else config.engine,
        )
    # The cache's manifest keeps every item (skipped ones listed by index); rows follow the filtered manifest.
    manifest = rows_without(src.manifest, skipped)
    return _Plan(
        config=config,
        key=key,
        material=material,
        path=path,
        manifest=manifest,
        full=src.manifest,
        skipped=skipped,
        resume_meta=resume_meta,
        options=options,
        chunk_rows=chunk_rows,
    )


def _resumable_meta(path: Path, notify=None) -> dict | None:
    """The metadata of an interrupted run of this key, or None to start afresh.

    ``find_cache_path`` only returns a folder that is absent or holds this key, so what is here is ours. Its
    committed rows are checked against their checksums first: a run that resumed after damaged rows would finish
    a cache that looks whole. Damaged, it is set aside instead, and its good rows reused.
    """
    if not path.exists():
        return None
    try:
        meta = read_meta(path)
    except CacheError:
        meta = None
    if meta is None or meta.get("complete"):
        shutil.rmtree(path)
        return None
    cache = Cache(path, meta)
    try:
        problems, _ = check_cache(cache, [s for s in cache.splits if meta["progress"].get(s)])
    finally:
        cache.close()
    if problems:
        _set_aside(path, problems, notify)
        return None
    return meta


def _engine(plan: _Plan, src, notify, engine_factory):
    """The engine of this run; building it before anything is written makes layer / weights errors come first."""
    from bottleneck.data import ImageDecodeError
    from bottleneck.inference.engines import choose_engine

    config = plan.config
    if engine_factory is not None:
        return engine_factory(config)

    def probe(size: int) -> np.ndarray:
        batch = []
        for it in plan.manifest.items:
            if len(batch) == config.batch_size:
                break
            try:
                image = src.load(it, size, config.resize, config.fast_decode)
            except ImageDecodeError:
                continue  # the pass meets it again and records or reports it
            plan.preloaded[it.id] = image  # decoded once: the pass takes it from here
            batch.append(image)
        return np.stack(batch)

    def calibrate():
        from bottleneck.inference.int8 import int8_engine

        return int8_engine(config, src, plan.manifest, plan.path.parent, notify)

    return choose_engine(
        config,
        plan.path.parent,
        probe=probe,
        n_images=len(plan.manifest),
        notify=notify,
        calibrate=calibrate,
    )


def _open_writer(plan: _Plan, engine) -> CacheWriter:
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
    writer.meta["engine"] = engine.name
    # Engines of tests and custom factories may not say where they ran.
    writer.meta["device"] = getattr(engine, "device", "cpu")
    writer.meta["layers"] = [{"name": n, "start": a, "stop": b} for n, a, b in engine.columns] or None
    if getattr(engine, "int8", None) is not None:
        from dataclasses import asdict

        writer.meta["int8"] = asdict(engine.int8)
    return writer


@dataclass
class _Counts:
    computed: int = 0  # rows run through the backbone
    resumed_from: int = 0  # rows committed by an interrupted earlier run
    reused: int = 0  # rows copied from other caches
    visited: set = field(default_factory=set)  # splits whose resumed rows are counted


def _compute(plan: _Plan, src, engine, progress, t0, cluster=None, factory=None) -> ExtractResult:
    """Every split, chunk by chunk, into the cache (here, or as tasks on a ``cluster``); ``finish`` publishes it
    complete."""
    writer = _open_writer(plan, engine)
    counts = _Counts()
    donors = Donors(plan.path.parent, features_key(plan.material), exclude=plan.path)
    try:
        if cluster is not None:
            from bottleneck.inference.distributed import compute_on_cluster, job_of

            for split in plan.manifest.splits():
                _open_split(plan, engine, writer, split)
            job = job_of(plan, engine, writer, factory)
            compute_on_cluster(cluster, job, plan.manifest, writer, donors, counts, progress)
        while cluster is None:
            try:
                for split in plan.manifest.splits():
                    _compute_split(plan, src, engine, writer, donors, split, counts, progress)
                break
            except LateBadImage as late:
                plan = drop_late(plan, src, writer, late, progress)
    except BaseException as exc:
        try:
            writer.abort()
        except OSError:  # closing may flush into the same full disk; what was committed is already durable
            pass
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, ExtractionInterrupted):
            done = sum(writer.meta["progress"].values())
            raise ExtractionInterrupted(
                f"stopped at a chunk boundary with {done}/{len(plan.manifest)} rows saved in {plan.path}; "
                "re-run the same command to resume."
            ) from None
        raise
    finally:
        donors.close()
    seconds = time.perf_counter() - t0
    extra = {
        "engine": writer.meta.get("engine", engine.name),
        "engine_difference": engine.verification.difference if engine.verification else None,
        "extract_seconds": round(seconds, 3),
        "source": plan.manifest.source,
        "source_options": plan.options,
        "features_key": features_key(plan.material),
    }
    return ExtractResult(
        writer.finish(extra),
        hit=False,
        seconds=seconds,
        computed=counts.computed,
        resumed_from=counts.resumed_from,
        reused=counts.reused,
        skipped=plan.skipped,
        engine=engine.name,
    )


def _open_split(plan: _Plan, engine, writer, split: str) -> tuple[int, int]:
    """(chunk rows, committed rows) of ``split`` in the store, created there when new."""
    if split in writer.meta["splits"]:
        return writer.meta["splits"][split]["chunk_rows"], writer.meta["progress"][split]
    config = plan.config
    chunk_rows = plan.chunk_rows or chunk_rows_for(config.batch_size, engine.feature_shape, config.dtype)
    rows = plan.manifest.rows_of(split)
    labels, ids = plan.manifest.label[rows], plan.manifest.id[rows].tolist()
    writer.create_split(split, len(rows), engine.feature_shape, config.dtype, labels, ids, chunk_rows)
    return chunk_rows, 0


def _compute_split(plan: _Plan, src, engine, writer, donors, split: str, counts: _Counts, progress) -> None:
    from bottleneck.inference.pipeline import iter_groups

    config = plan.config
    items = plan.manifest.items_of(split)
    n = len(items)
    chunk_rows, done = _open_split(plan, engine, writer, split)
    if split not in counts.visited:  # a split is visited again after an image of a later one was dropped
        counts.visited.add(split)
        counts.resumed_from += done
    if progress:
        progress(split, done, n)

    def load(item):
        image = plan.preloaded.pop(item.id, None)
        return image if image is not None else load_or_late(src, item, engine.input_size, config)

    # One commit per chunk; chunk_rows is a multiple of the batch size, so a resumed run starts on a batch
    # boundary of the uninterrupted one and groups images identically. The batches of all chunks form one
    # decoding stream, so decoding runs ahead across commits, and each chunk is written and committed in a
    # background thread while the next one computes (one commit in flight; they land in order).
    bs = config.batch_size
    chunks = []
    for chunk_start in range(done, n, chunk_rows):
        chunk = items[chunk_start : chunk_start + chunk_rows]
        chunks.append((chunk_start, chunk, donors.missing([it.hash for it in chunk])))
    groups = (
        [chunk[i] for i in todo[b : b + bs]] for _, chunk, todo in chunks for b in range(0, len(todo), bs)
    )
    stream = iter_groups(load, groups, workers=config.workers or _tf.cpu_count())

    def commit(chunk_start, chunk, todo, out):
        writer.write(split, chunk_start, out)
        writer.commit(split, chunk_start + len(chunk))
        # Counted at the commit: a chunk restarted after a dropped image is not counted twice.
        counts.computed += len(todo)
        counts.reused += len(chunk) - len(todo)
        return chunk_start + len(chunk)

    def landed(future):
        rows = future.result()
        if progress:
            progress(split, rows, n)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as committer:
        pending = None
        try:
            for chunk_start, chunk, todo in chunks:
                out = np.empty((len(chunk), *engine.feature_shape), dtype=config.dtype)
                donors.fill(out, [it.hash for it in chunk])
                rows_before = chunk_start + len(chunk) - len(todo)
                for b in range(0, len(todo), bs):
                    batch = next(stream)
                    out[todo[b : b + len(batch)]] = engine(batch)
                    if progress:
                        progress(split, rows_before + b + len(batch), n)
                if pending is not None:
                    landed(pending)
                pending = committer.submit(commit, chunk_start, chunk, todo, out)
        finally:
            stream.close()
            if pending is not None:  # what was computed before an error is still committed
                landed(pending)


# Errors of a full disk, a quota, or a read-only / forbidden cache folder: the user can fix these and resume.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def _write_errors(cache_dir, path: Path):
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
