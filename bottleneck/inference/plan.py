"""Planning an extraction before any image is computed: the settings made explicit, the int8 calibration identity,
what the cache folder already holds (a resumable run, a damaged cache to set aside), the rows, and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck.backbones import get_spec
from bottleneck.backbones.build import require_preprocess
from bottleneck.backbones.model_file import is_model_path
from bottleneck.backbones.onnx_file import is_onnx_path, resolve
from bottleneck.cache import Cache, integrity, read_meta
from bottleneck.cache.health import Problem, check_cache
from bottleneck.cache.manage import clear_for_rewrite
from bottleneck.config import ExtractConfig
from bottleneck.data import ImageDecodeError
from bottleneck.data.manifest import Manifest
from bottleneck.errors import BackboneError, CacheError
from bottleneck.inference.bad_files import header_bad_files, rows_without
from bottleneck.inference.chooser import choose_engine
from bottleneck.inference.engines import check_device
from bottleneck.inference.quantize import calibration_hash, calibration_items, int8_weights

# Aim for chunks of a few MB: big enough to compress well, small enough that a crash loses little.
CHUNK_BYTES = 8 << 20


def chunk_rows_for(batch_size: int, feature_shape, dtype: str) -> int:
    row_bytes = int(np.prod(feature_shape)) * np.dtype(dtype).itemsize
    return batch_size * max(1, min(64, CHUNK_BYTES // max(1, batch_size * row_bytes)))


def check_backbone(config: ExtractConfig) -> None:
    """Fail on a bad backbone name, weights path or device before reading any image."""

    check_device(config)
    if is_onnx_path(config.backbone):
        resolve(config)  # the file's safety, its preprocessing, size and taps, before any image is read
        return
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


# The pixels baseline's largest side: 32x32x3 = 3072 values, still quick for a logistic regression.
PIXELS_SIDE = 32


def resolved_config(config: ExtractConfig, src) -> ExtractConfig:
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


def calibration_material(config: ExtractConfig, src) -> dict:
    """int8 features depend on the calibration images: their identity joins the key (none for fp32)."""
    if config.precision != "int8":
        return {}

    material = {"calibration_ids": calibration_hash(calibration_items(src.manifest, config.calibration))}
    weights = int8_weights()
    if weights != "s8":  # another model, other features; s8 caches keep the keys they had
        material["int8_weights"] = weights
    return material


def _describe(problems: list[Problem]) -> str:
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


def set_damaged_aside(path: Path, damage: list[Problem], notify) -> list[Path]:
    """A complete cache of this key that a hit found damaged: moved aside (hidden) so that the extraction that
    replaces it reuses its rows that still match their checksums and computes only the others."""
    if not damage or not path.exists():
        return []
    if notify:
        notify(f"cache {path.name} is damaged ({_describe(damage)}); computing the damaged rows again")
    return [integrity.set_aside(path)]


@dataclass
class Plan:
    """What a (new or resumed) extraction writes, decided before any image is computed."""

    config: ExtractConfig  # with the batch size and engine of an interrupted run when resuming
    key: str
    material: dict  # what the key hashes
    path: Path
    manifest: Manifest  # without skipped images: one row per item
    full: Manifest  # every source item, skipped ones included (the cache's manifest file)
    skipped: list[dict]  # [{"index", "id", "reason"}]
    resume_meta: dict | None  # the interrupted run's metadata, or None for a fresh cache
    options: dict  # how the source was opened (recorded so `cache verify` can reopen it)
    chunk_rows: int | None
    preloaded: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # id -> resized image the engine probe decoded


def make_plan(src, config, key, material, path, options, chunk_rows, progress, notify=None) -> Plan:
    resume_meta = resumable_meta(path, notify)
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
    return Plan(
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


def resumable_meta(path: Path, notify=None) -> dict | None:
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
        clear_for_rewrite(path)
        return None
    cache = Cache(path, meta)
    try:
        problems, _ = check_cache(cache, [s for s in cache.splits if meta["progress"].get(s)])
    finally:
        cache.close()
    if problems:
        set_damaged_aside(path, problems, notify)
        return None
    return meta


def plan_engine(plan: Plan, src, notify, engine_factory):
    """The engine of this run; building it before anything is written makes layer / weights errors come first."""

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

    return choose_engine(
        config,
        plan.path.parent,
        probe=probe,
        n_images=len(plan.manifest),
        notify=notify,
        calibration=(src, plan.manifest),
    )
