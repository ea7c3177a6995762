"""The int8 engine of a config: the verified fp32 ONNX model (chosen by ``inference.chooser``), quantized once per
calibration sample and reused; and the int8 engine a saved int8 cache was extracted with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck.backbones import get_spec
from bottleneck.errors import BackboneError
from bottleneck.inference.engines import OnnxEngine, onnx_model_path
from bottleneck.inference.quantize import (
    AGREEMENT_IMAGES,
    MIN_COSINE,
    Int8Record,
    agreement,
    calibration_hash,
    calibration_items,
    int8_path,
    int8_weights,
    quantize,
    read_record,
    write_record,
)

BATCH = 32


def _pixels(src, items, size: int, config):
    for a in range(0, len(items), BATCH):
        yield np.stack([src.load(it, size, config.resize, config.fast_decode) for it in items[a : a + BATCH]])


def int8_engine(config, fp32: OnnxEngine, src, manifest, notify=None):
    """An OnnxEngine running the int8 model of ``config`` (quantized from ``fp32``, its verified fp32 ONNX engine),
    calibrated on ``config.calibration`` stratified train images of ``manifest``; quantized and checked against fp32 once, then reused from its record.

    BackboneError when the int8 features agree with fp32 ones below MIN_COSINE (mean cosine on held-out train
    images), unless ``config.accept_drift``.
    """
    calib = calibration_items(manifest, config.calibration)
    train = len(manifest.items_of("train"))
    if config.calibration > train and notify:
        notify(f"calibration={config.calibration} is more than the {train} train images; calibrating on all")
    ids = calibration_hash(calib)
    weights = int8_weights()
    path = int8_path(fp32.path, ids, weights)
    record = read_record(path)
    if record is None or record.calibration_ids != ids or record.weights != weights or not path.exists():
        if notify:
            notify(f"quantizing {config.backbone} to int8 (once; calibrated on {len(calib)} train images)")
        size = fp32.input_size
        name = fp32.session.get_inputs()[0].name
        quantize(fp32.path, path, name, _pixels(src, calib, size, config), weights)
        chosen = {it.index for it in calib}
        held = [it for it in calibration_items(manifest, train) if it.index not in chosen][:AGREEMENT_IMAGES]
        held = held or calib[:AGREEMENT_IMAGES]  # every train image calibrated: compare on those
        images = np.concatenate(list(_pixels(src, held, size, config)))
        trial = OnnxEngine(path, size, fp32.feature_shape, config.threads, device="cpu")
        record = Int8Record(
            ids,
            len(calib),
            **agreement(trial(images), fp32(images)),
            agreement_images=len(held),
            weights=weights,
        )
        write_record(path, record)
    if record.mean_cosine < MIN_COSINE and not config.accept_drift:
        raise BackboneError(
            f"the int8 features of {config.backbone} agree with fp32 ones only to a mean cosine similarity of "
            f"{record.mean_cosine:.3f} (< {MIN_COSINE}) on {record.agreement_images} held-out images; use "
            "precision='fp32', or accept_drift=True to extract them anyway."
        )
    return OnnxEngine(
        path,
        fp32.input_size,
        fp32.feature_shape,
        config.threads,
        verification=fp32.verification,
        columns=fp32.columns,
        int8=record,
        device="cpu",
    )


def saved_int8_engine(config, meta: dict, cache_dir):
    """The int8 engine an int8 cache was extracted with (``meta``: its metadata), read from the engines folder
    under ``cache_dir``: what ``predict`` and ``cache verify`` must run to get the cache's features again."""
    info = meta.get("int8") or {}
    size = config.image_size or get_spec(config.backbone).input_size
    fp32 = onnx_model_path(config.replace(precision="fp32"), size, cache_dir)
    path = int8_path(fp32, info.get("calibration_ids", ""), info.get("weights", "s8"))
    if not info or not path.exists():
        raise BackboneError(
            f"the int8 model this cache was extracted with is not in {Path(cache_dir) / 'engines'}; run the same "
            "`bottleneck extract ... --precision int8` there again (it is a cache hit that rebuilds the model)."
        )
    columns = tuple(tuple(c) for c in (d.values() for d in (meta.get("layers") or [])))
    shape = tuple(next(iter(meta["splits"].values()))["feature_shape"])
    return OnnxEngine(
        path, size, shape, config.threads, columns=columns, int8=Int8Record(**info), device="cpu"
    )
