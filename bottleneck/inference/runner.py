"""The extraction runner: source -> manifest -> key -> (hit | engine over the input pipeline -> store)."""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.cache import META, Cache, CacheWriter, cache_dir_name, compute_key, open_cache, read_meta
from bottleneck.cache.key import features_key, is_model_path
from bottleneck.cache.lock import cache_lock
from bottleneck.cache.reuse import Donors
from bottleneck.callbacks import Notify, Progress
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError, BadImageError, BottleneckError, CacheError, ExtractionInterrupted

# Aim for chunks of a few MB: big enough to compress well, small enough that a crash loses little.
CHUNK_BYTES = 8 << 20


MAX_BAD_LISTED = 20


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

    @property
    def path(self) -> Path:
        return self.cache.path

    def summary(self) -> dict:
        """The JSON shape of `bottleneck extract --json`."""
        return {
            "path": str(self.cache.path),
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


def _is_complete(path: Path) -> bool:
    try:
        return bool(json.loads((path / META).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def _check_backbone(config: ExtractConfig) -> None:
    """Fail on a bad backbone name or weights path before reading any image."""
    if is_model_path(config.backbone):
        if not Path(config.backbone).exists():
            raise BackboneError(
                f"model file {config.backbone} does not exist; pass a .keras/.h5 file or a registry name."
            )
        if config.preprocess is None:
            raise BackboneError(
                f"--preprocess is required for a model file ({config.backbone}): choose caffe, torch, tf, 127 or none."
            )
        return
    from bottleneck.backbones import get_spec

    get_spec(config.backbone)
    if config.weights not in ("imagenet", "none") and not Path(config.weights).exists():
        raise BackboneError(
            f"weights file {config.weights} does not exist; pass --weights imagenet, none, or a path to a local weights file."
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
    engine_factory: Callable | None = None,
    chunk_rows: int | None = None,
    **overrides,
) -> ExtractResult:
    """Extract features of every image of every split once; reuse the cache when the key matches.

    ``overrides`` are ExtractConfig fields (``backbone="vgg16", pooling="none"`` ...). ``engine_factory(config)``
    replaces the default engine (tests pass fakes; it must return an object with ``input_size``,
    ``feature_shape``, ``name`` and ``__call__(uint8 batch) -> features``). ``chunk_rows`` (a multiple of the
    batch size) overrides the commit granularity, which is otherwise a few MB of features. Returns an ExtractResult
    whose ``cache`` holds per split ``features`` (N x feature_shape), ``labels`` (N,) and ``ids`` (N,).
    """
    from bottleneck.data import find_bad_images, open_source

    t0 = time.perf_counter()
    config = (config or ExtractConfig()).replace(**overrides) if overrides else (config or ExtractConfig())
    _check_backbone(config)
    source_options = {"h5_keys": h5_keys, "val_fraction": val_fraction, "seed": seed}
    if config.max_image_pixels is not None:
        source_options["max_image_pixels"] = config.max_image_pixels
    with open_source(source, **source_options) as src:
        manifest = src.manifest
        key, material = compute_key(config, manifest.fingerprint())
        path = Path(cache_dir) / cache_dir_name(config, key)
        if not force and _is_complete(path):
            return ExtractResult(open_cache(path), hit=True, seconds=time.perf_counter() - t0)
        with _write_errors(cache_dir, path), cache_lock(path, notify):
            if not force and _is_complete(path):  # another process finished it while we waited
                return ExtractResult(open_cache(path), hit=True, seconds=time.perf_counter() - t0)
            if force and path.exists():
                shutil.rmtree(path)

            resume_meta = _resumable_meta(path, key)
            if resume_meta is None:
                skipped = []
                if manifest.kind in ("folders", "csv"):
                    bad = find_bad_images(src, workers=config.workers or _tf.cpu_count(), progress=progress)
                    if bad and config.on_bad_image == "fail":
                        listed = "; ".join(f"{it.id} ({reason})" for it, reason in bad[:MAX_BAD_LISTED])
                        more = f" and {len(bad) - MAX_BAD_LISTED} more" if len(bad) > MAX_BAD_LISTED else ""
                        raise BadImageError(
                            f"{len(bad)} unreadable image(s): {listed}{more}. Fix or remove them, "
                            "or pass --on-bad-image skip to leave them out.",
                            [it.path or it.id for it, _ in bad],
                        )
                    skipped = [{"index": it.index, "id": it.id, "reason": reason} for it, reason in bad]
            else:
                skipped = resume_meta.get("skipped", [])
            # manifest.json keeps every item (skipped ones listed by index); rows follow the filtered manifest.
            manifest_json = {**manifest.to_json(), "skipped": skipped}
            if skipped:
                manifest = manifest.without([s["index"] for s in skipped])
                if not manifest.items:
                    raise BadImageError(
                        "every image was unreadable; nothing to extract.", [s["id"] for s in skipped]
                    )
            options = source_options
            if chunk_rows is not None and (chunk_rows < 1 or chunk_rows % config.batch_size):
                raise BottleneckError(
                    f"chunk_rows {chunk_rows} must be a positive multiple of the batch size {config.batch_size}."
                )
            job = _Job(
                src,
                manifest,
                manifest_json,
                config,
                key,
                material,
                path,
                skipped,
                resume_meta,
                options,
                chunk_rows,
            )
            return _run(job, progress, notify, engine_factory, t0)


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
            f"{_saved_so_far(path)}. Free space or make the folder writable (or pass --cache-dir "
            "elsewhere), then re-run the same command to resume."
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


def _resumable_meta(path: Path, key: str) -> dict | None:
    """The metadata of an interrupted run of this same key, or None to start afresh."""
    if not path.exists():
        return None
    try:
        meta = read_meta(path)
    except CacheError:
        meta = None
    if meta is None or meta.get("key") != key or meta.get("complete"):
        shutil.rmtree(path)
        return None
    return meta


@dataclass
class _Job:
    src: object
    manifest: object  # without skipped images: one row per item
    manifest_json: dict  # every item, with the skipped ones listed
    config: ExtractConfig
    key: str
    material: dict
    path: Path
    skipped: list
    resume_meta: dict | None
    options: dict
    chunk_rows: int | None = None


def _run(job: _Job, progress, notify, engine_factory, t0) -> ExtractResult:
    from bottleneck.data import resize_image
    from bottleneck.inference.engines import create_engine, select_engine, verified_onnx_engine
    from bottleneck.inference.pipeline import iter_batches

    config, manifest, src = job.config, job.manifest, job.src
    if job.resume_meta is not None:
        # Resume with the batch size and engine of the interrupted run, so batches (and values) are identical.
        stored_engine = job.resume_meta.get("engine")
        config = config.replace(
            batch_size=job.resume_meta["config"]["batch_size"],
            engine=stored_engine if stored_engine in ("tensorflow", "onnx") else config.engine,
        )
    if engine_factory is not None:
        engine = engine_factory(config)
    else:
        # An ONNX model converted and verified by an earlier run needs no TensorFlow at all.
        engine = verified_onnx_engine(config, job.path.parent)
        if engine is None:
            # Building the model first makes layer / weights errors surface before anything is written.
            tf_engine = create_engine(config)
            probe = np.stack(
                [
                    resize_image(src.read(it), tf_engine.input_size, config.resize)
                    for it in manifest.items[: config.batch_size]
                ]
            )
            engine = select_engine(
                tf_engine,
                config,
                probe,
                cache_dir=job.path.parent,
                notify=notify,
                n_images=len(manifest.items),
            )
    size = engine.input_size

    def load(item):
        return resize_image(src.read(item), size, config.resize)

    if job.resume_meta is not None:
        writer = CacheWriter.reopen(job.path, job.resume_meta)
    else:
        writer = CacheWriter(
            job.path,
            key=job.key,
            key_material=job.material,
            config=config,
            class_names=manifest.class_names,
            manifest_json=job.manifest_json,
            skipped=job.skipped,
        )
        writer.meta["engine"] = engine.name

    computed = resumed_from = reused = 0
    dtype = np.dtype(config.dtype)
    workers = config.workers or _tf.cpu_count()
    donors = Donors(job.path.parent, features_key(job.material), exclude=job.path)
    try:
        for split in manifest.splits():
            items = manifest.items_of(split)
            n = len(items)
            if split in writer.meta["splits"]:
                chunk_rows = writer.meta["splits"][split]["chunk_rows"]
                done = writer.meta["progress"][split]
            else:
                chunk_rows = job.chunk_rows or chunk_rows_for(
                    config.batch_size, engine.feature_shape, config.dtype
                )
                labels, ids = [it.label for it in items], [it.id for it in items]
                writer.create_split(split, n, engine.feature_shape, dtype.name, labels, ids, chunk_rows)
                done = 0
            resumed_from += done
            if progress:
                progress(split, done, n)
            # One commit per chunk; chunk_rows is a multiple of the batch size, so a resumed run starts on a
            # batch boundary of the uninterrupted one and groups images identically.
            for chunk_start in range(done, n, chunk_rows):
                chunk_items = items[chunk_start : chunk_start + chunk_rows]
                out = np.empty((len(chunk_items), *engine.feature_shape), dtype=dtype)
                todo = []
                for i, item in enumerate(chunk_items):
                    row = donors.get(item.hash)
                    if row is None:
                        todo.append(i)
                    else:
                        out[i] = row
                reused += len(chunk_items) - len(todo)
                rows_before = chunk_start + len(chunk_items) - len(todo)
                for start, batch in iter_batches(
                    load, [chunk_items[i] for i in todo], config.batch_size, workers=workers
                ):
                    out[todo[start : start + len(batch)]] = engine(batch)
                    computed += len(batch)
                    if progress:
                        progress(split, rows_before + start + len(batch), n)
                writer.write(split, chunk_start, out)
                writer.commit(split, chunk_start + len(chunk_items))
                if progress:
                    progress(split, chunk_start + len(chunk_items), n)
    except BaseException as exc:
        try:
            writer.abort()
        except OSError:  # closing may flush into the same full disk; what was committed is already durable
            pass
        donors.close()
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, ExtractionInterrupted):
            done = sum(writer.meta["progress"].values())
            raise ExtractionInterrupted(
                f"stopped at a chunk boundary with {done}/{len(manifest.items)} rows saved in {job.path}; "
                "re-run the same command to resume."
            ) from None
        raise
    donors.close()
    seconds = time.perf_counter() - t0
    extra = {
        "engine": writer.meta.get("engine", engine.name),
        "engine_difference": getattr(engine, "verified_difference", None),
        "extract_seconds": round(seconds, 3),
        "source": manifest.source,
        "source_options": job.options,
        "features_key": features_key(job.material),
    }
    cache = writer.finish(extra)
    return ExtractResult(
        cache,
        hit=False,
        seconds=seconds,
        computed=computed,
        resumed_from=resumed_from,
        reused=reused,
        skipped=job.skipped,
        engine=engine.name,
    )
