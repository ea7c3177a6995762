"""The extraction runner: source -> manifest -> key -> (hit | plan -> engine -> computed ranges -> published cache).

Planning (settings, resume, damage, rows, engine) is ``inference.plan``; computing the rows, here or on a cluster,
is ``inference.compute``; this module decides between a hit and a run, and holds the locks while one runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck import storage
from bottleneck._ownership import mark_root
from bottleneck.backbones.onnx_file import resolve
from bottleneck.cache import META, Cache, compute_key, open_cache
from bottleneck.cache.health import Problem, hit_problems
from bottleneck.cache.integrity import CACHE_ROOT
from bottleneck.cache.lock import cache_lock
from bottleneck.cache.manage import clear_for_rewrite
from bottleneck.cache.meta import find_cache_path
from bottleneck.callbacks import Notify, Progress
from bottleneck.config import ExtractConfig
from bottleneck.data import open_source
from bottleneck.data.exclusions import exclusions_digest, read_exclusions
from bottleneck.data.hash_index import HashIndex, index_path
from bottleneck.errors import BottleneckError, CacheError
from bottleneck.inference.compute import compute, write_errors
from bottleneck.inference.distributed import Cluster, check_cluster
from bottleneck.inference.plan import (
    calibration_material,
    check_backbone,
    make_plan,
    plan_engine,
    resolved_config,
    set_damaged_aside,
)
from bottleneck.job_settings import EXTRACT_RUN

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
    split: str | None = None,
    label_key: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    pilot: dict | None = None,
    rehash: bool = False,
    cluster: str | None = None,
    exclude=None,
    **overrides,
) -> ExtractResult:
    """Extract features of every image of every split once; reuse the cache when the key matches.

    ``source`` is a folder of class folders (optionally under train/val/test), a .h5 / .npz file, a folder of
    .npy pairs or IDX files, a CSV of path,label[,split], or Parquet file(s) (``image_column`` / ``label_column``
    name their columns; ``bottleneck.data.parquet_source``). ``overrides`` are ExtractConfig fields
    (``backbone="vgg16", pooling="none"`` ...). ``val_fraction`` carves a stratified, ``seed``-ed val split out
    of train when the source has none. ``pilot={"per_class": N, "seed": s}`` extracts a stratified sample
    (``bottleneck.data.manifest.pilot``). WebDataset shards take ``split`` (every shard's split, default from
    its name) and ``label_key`` (the .json label field, default ``label``). Image files whose size and times are
    unchanged since an earlier run under ``cache_dir`` are not read again (a hash index per source, like git's); ``rehash=True`` reads and hashes
    every file anyway. ``source`` and ``cache_dir`` may be URLs (``s3://bucket/prefix``; ``bottleneck.storage``):
    the source is mirrored locally (changed objects only), the cache built in a local staging folder and
    published to the bucket when complete (``ExtractResult.url``). ``cluster`` spreads the computing over a Dask cluster (``"local:N"`` worker processes, or
    a scheduler address ``"tcp://HOST:8786"``; zarr caches only; needs ``bottleneck-features[dask]``): the same features,
    bit for bit. ``exclude`` (a CSV with an ``id`` column, such as ``inspect``'s leaks.csv, or a list of ids)
    leaves those images out; the list's digest is part of the key. ``progress(stage, done, total)`` and ``notify(line)`` report progress.
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
        split=split,
        label_key=label_key,
        image_column=image_column,
        label_column=label_column,
        pilot=pilot,
        rehash=rehash,
        cluster=cluster,
        exclude=exclude,
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
    split: str | None = None,
    label_key: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    pilot: dict | None = None,
    engine_factory: Callable | None = None,
    chunk_rows: int | None = None,
    rehash: bool = False,
    cluster: str | None = None,
    exclude=None,
    **overrides,
) -> ExtractResult:
    """``extract`` with the hooks tests and benchmarks need: ``engine_factory(config)`` returns the Engine to use
    (default: the verified ONNX model or TensorFlow), ``chunk_rows`` (a multiple of the batch size) sets the
    commit granularity, otherwise a few MB of features."""
    t0 = time.perf_counter()
    # an ONNX file's sidecar and fixed input size made explicit, before the key
    config = resolve((config or ExtractConfig()).replace(**overrides))
    options = _checked(
        config, val_fraction, seed, force, rehash, cluster, chunk_rows, h5_keys, pilot, exclude
    )
    options.update(
        _kind_options(split=split, label_key=label_key, image_column=image_column, label_column=label_column)
    )
    source, remote, cache_dir = _staged(source, cache_dir, progress)
    index = HashIndex(index_path(Path(cache_dir) / INDEX_DIR, source), rehash=rehash)
    with open_source(
        source, keep_bytes=read_once_budget(), hash_index=index, notify=notify, **options
    ) as src:
        config = resolved_config(config, src)
        extra = calibration_material(config, src) | exclusion_material(options)
        key, material = compute_key(config, src.manifest.fingerprint(), extra)
        path = find_cache_path(cache_dir, config, key)
        hit = _Hit(path, force=force, remote=remote, index=index, t0=t0, progress=progress)
        found = hit()
        if found is not None:
            return found
        lease = remote.lease(path.name, notify) if remote is not None else contextlib.nullcontext()
        with write_errors(cache_dir, path), cache_lock(path, notify), lease:
            found = hit()  # another process finished it while we waited
            if found is not None:
                return found
            if force and path.exists():
                # find_cache_path gave a folder of this key (or none): ours to replace
                clear_for_rewrite(path)
            aside = set_damaged_aside(path, hit.damage, notify)
            # first: an unreachable scheduler fails before any compute
            with _connected(cluster, notify) as dask:
                try:
                    plan = make_plan(src, config, key, material, path, options, chunk_rows, progress, notify)
                finally:
                    _save_index(index)  # with the header checks of this miss, also when they stop the run
                engine = plan_engine(plan, src, notify, engine_factory)
                cache, counts = compute(plan, src, engine, progress, t0, dask, engine_factory)
            result = ExtractResult(
                cache,
                hit=False,
                seconds=time.perf_counter() - t0,
                computed=counts.computed,
                resumed_from=counts.resumed_from,
                reused=counts.reused,
                skipped=counts.skipped,
                engine=engine.name,
            )
            for folder in aside:  # its good rows are in the new cache now
                shutil.rmtree(folder, ignore_errors=True)
            if remote is not None:
                remote.publish(path.name, progress)
                result.url = remote.url_of(path.name)
            return result


def _kind_options(**given) -> dict:
    """The options of one kind of source (WebDataset's split and label key, Parquet's columns), checked, and kept
    (and passed on to ``open_source``) only when given: other sources' metadata stays as it was."""
    EXTRACT_RUN.validate({"split": given["split"]})
    return {k: v for k, v in given.items() if v is not None}


def _checked(config, val_fraction, seed, force, rehash, cluster, chunk_rows, h5_keys, pilot, exclude) -> dict:
    """Every setting checked before the source is read; the source's options (``open_source`` keywords)."""
    EXTRACT_RUN.validate({"val_fraction": val_fraction, "seed": seed, "force": force, "rehash": rehash})
    check_backbone(config)
    if cluster is not None:
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
    if exclude is not None:
        # the ids themselves (not the file's path): whoever reopens the source (recompute, fine-tuning) leaves
        # out the same rows, whether or not the list is still there
        # (a list of ids is taken as it is: what a cache's source_options hand to the extractions made from it)
        is_file = isinstance(exclude, str | os.PathLike)
        options["exclude"] = read_exclusions(exclude) if is_file else sorted(set(map(str, exclude)))
    return options


def exclusion_material(options: dict) -> dict:
    """The key's entry of an exclusion list: only when one is given, so every other key stays as it was."""
    return {"exclude": exclusions_digest(options["exclude"])} if "exclude" in options else {}


def _staged(source, cache_dir, progress):
    """(local source, the cache_dir URL's remote or None, local cache folder), the folder marked as a cache root."""
    if not str(
        cache_dir
    ).strip():  # Path("") is the working folder: caches and indexes would land among its files
        raise CacheError(
            "cache_dir='' names no folder; pass a folder for the caches, e.g. cache_dir='cache'."
        )
    source, remote, cache_dir = storage.stage(source, cache_dir, progress)
    if Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise CacheError(
            f"cache_dir={str(cache_dir)!r} is a file, not a folder; pass a folder for the caches."
        )
    try:
        mark_root(cache_dir, CACHE_ROOT)  # what lets `cache gc` collect leftovers here, and nowhere else
    except OSError as exc:
        raise CacheError(
            f"cannot write into cache_dir={str(cache_dir)!r} ({exc.strerror or exc}); pass a writable folder."
        ) from None
    return source, remote, cache_dir


class _Hit:
    """The complete cache of this key, here or (fetched) from a cache_dir URL; published when missing. A complete
    cache whose data changed since it was last found whole is checked first: damage is no hit (``damage`` says
    what was found, for setting it aside)."""

    def __init__(self, path: Path, *, force: bool, remote, index: HashIndex, t0: float, progress):
        self.path, self.force, self.remote, self.index, self.t0 = path, force, remote, index, t0
        self.progress = progress
        self.damage: list[Problem] = []

    def __call__(self) -> ExtractResult | None:
        path, remote = self.path, self.remote
        if self.force:
            return None
        if remote is not None and not is_complete(path):
            remote.fetch(path.name, self.progress)
        if not is_complete(path):
            return None
        self.damage[:] = hit_problems(path)
        if self.damage:
            return None
        _save_index(self.index)
        if remote is not None and not remote.is_complete(path.name):
            remote.publish(path.name, self.progress)
        return ExtractResult(
            open_cache(path),
            hit=True,
            seconds=time.perf_counter() - self.t0,
            url=remote and remote.url_of(path.name),
        )


@contextlib.contextmanager
def _connected(cluster: str | None, notify):
    """The Dask cluster of ``cluster`` while the block runs (None: this process computes)."""
    if cluster is None:
        yield None
        return
    with Cluster(cluster) as dask:
        if notify:
            notify(f"computing on {dask.workers} Dask worker(s) at {cluster}")
        yield dask


def _save_index(index: HashIndex) -> None:
    try:
        index.save()
    except OSError:  # a read-only cache folder: the next run reads the files again, nothing worse
        pass


def is_complete(path: Path) -> bool:
    """The folder's meta.json says the cache is complete (its contents are checked by ``hit_problems``)."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and bool(meta.get("complete"))
