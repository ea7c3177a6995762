"""The one engine chooser: extraction, int8 quantization, the Embedder, prediction, `cache verify --recompute`,
fine-tuning views and cluster workers all get their engine from ``choose_engine``, so they cannot disagree.

fp32: an ONNX model an earlier run converted and verified (no TensorFlow imported), else TensorFlow, swapped for
ONNX once a conversion is verified on a real batch (and, for ``auto``, timed faster). int8: the saved model of a
cache, or a new one quantized on the verified fp32 ONNX model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck._io import write_json_atomic
from bottleneck.backbones import get_spec
from bottleneck.backbones.build import feature_model_of
from bottleneck.backbones.model_file import is_model_path
from bottleneck.backbones.onnx_file import is_onnx_path
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError, first_line
from bottleneck.inference.engines import (
    NO_TF_GPU,
    ONNX_TOLERANCE,
    OnnxEngine,
    TensorFlowEngine,
    Verification,
    convert_to_onnx,
    onnx_available,
    onnx_model_path,
    relative_difference,
)
from bottleneck.inference.int8 import int8_engine, saved_int8_engine
from bottleneck.inference.onnx_file_engine import onnx_file_engine

# Below this many images, `auto` does not pay for a first ONNX conversion.
AUTO_ONNX_MIN_IMAGES = 512


def _time_per_image(engine, batch: np.ndarray, repeats: int = 1) -> float:
    engine(batch)  # warm-up: first calls allocate and specialise
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        engine(batch)
        best = min(best, time.perf_counter() - t)
    return best / len(batch)


def _select_engine(
    tf_engine: TensorFlowEngine,
    config: ExtractConfig,
    probe: np.ndarray,
    *,
    cache_dir="cache",
    notify=None,
    n_images: int = 0,
):
    """Pick the engine for a run: TensorFlow, or ONNX once it is converted and verified on ``probe`` (a real batch).

    ``auto`` prefers ONNX when it is verified and faster on the probe batch. A failed conversion or check falls
    back to TensorFlow with a one-line warning through ``notify``; it never fails the run.
    """
    if config.engine == "tensorflow":
        return tf_engine
    path = onnx_model_path(config, tf_engine.input_size, cache_dir) if onnx_available() else None
    if config.engine == "auto" and n_images < AUTO_ONNX_MIN_IMAGES and not (path and path.exists()):
        return tf_engine  # a first conversion costs more than it saves on a small run
    if not onnx_available():
        if config.engine == "onnx" and notify:
            notify(
                "warning: onnxruntime/tf2onnx not installed; using the tensorflow engine (pip install onnxruntime tf2onnx onnx)"
            )
        return tf_engine
    try:
        if not path.exists():
            if notify:
                notify(f"converting {config.backbone} to ONNX (once; cached in {path.parent})")
            convert_to_onnx(tf_engine, path)
        onnx_engine = OnnxEngine(
            path,
            tf_engine.input_size,
            tf_engine.feature_shape,
            config.threads,
            columns=tf_engine.columns,
            device=config.device,
        )
        diff = relative_difference(onnx_engine(probe), tf_engine(probe))
    except BackboneError:
        raise  # device='gpu' and ONNX Runtime cannot run on one: falling back to the CPU would hide it
    except Exception as exc:  # any converter/runtime failure: TF still gives correct features
        if notify:
            notify(
                f"warning: ONNX engine unavailable ({first_line(exc, with_type=True, limit=120)}); using tensorflow"
            )
        return tf_engine
    if not diff <= ONNX_TOLERANCE:
        if notify:
            notify(
                f"warning: ONNX features differ from TensorFlow by {diff:.1e} (> {ONNX_TOLERANCE:.0e}); using tensorflow"
            )
        path.unlink(missing_ok=True)
        _record_path(path).unlink(missing_ok=True)
        return tf_engine
    faster = (
        None
        if config.engine == "onnx"
        else _time_per_image(onnx_engine, probe) <= _time_per_image(tf_engine, probe)
    )
    if faster is None:  # a forced --engine onnx run did not time TensorFlow: keep what an auto run measured
        faster = (_read_record(path) or Verification(diff, ())).faster
    onnx_engine.verification = Verification(diff, tuple(tf_engine.feature_shape), faster, tf_engine.columns)
    _write_record(path, onnx_engine.verification)
    return tf_engine if faster is False else onnx_engine


def _record_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".verified.json")


def _write_record(onnx_path: Path, verification: Verification) -> None:
    """Note next to a converted model that it matched TensorFlow (and whether it was faster), atomically."""
    try:
        write_json_atomic(_record_path(onnx_path), asdict(verification))
    except OSError:  # only a shortcut for later runs: a read-only engines folder must not fail this one
        pass


def _read_record(onnx_path: Path) -> Verification | None:
    try:
        d = json.loads(_record_path(onnx_path).read_text())
        columns = tuple(tuple(c) for c in d["columns"]) if "columns" in d else None
        return Verification(float(d["difference"]), tuple(d["feature_shape"]), d.get("faster"), columns)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _verified_onnx_engine(config: ExtractConfig, cache_dir="cache") -> OnnxEngine | None:
    """The ONNX engine of a config when an earlier run converted and verified it, built without TensorFlow.

    Importing TensorFlow, building the Keras model and verifying a probe batch cost about 6 s (Lite0, 2 cores),
    which dominates small runs. The model file is keyed by everything that changes its graph and weights
    (library versions included), and it matched TensorFlow within ONNX_TOLERANCE when it was recorded, so it is
    reused as is. None (build TensorFlow, then ``_select_engine``) for ``--engine tensorflow``, model files
    (their input size needs the model), no record, or when ``auto`` found TensorFlow faster.
    """
    if config.engine == "tensorflow" or is_model_path(config.backbone) or not onnx_available():
        return None
    if config.precision != "fp32":  # the fp32 model computes other features (inference.int8 has its own)
        return None
    size = config.image_size or get_spec(config.backbone).input_size
    path = onnx_model_path(config, size, cache_dir)
    record = _read_record(path)
    if not record or not path.exists() or (config.engine == "auto" and record.faster is not True):
        return None
    if record.columns is None:  # recorded before layer columns were: verify once more to record them
        return None
    try:
        return OnnxEngine(
            path, size, record.feature_shape, config.threads, record, record.columns, device=config.device
        )
    except BackboneError:
        raise  # device='gpu' without a usable GPU
    except Exception:  # a damaged file: the slow path converts it again
        return None


def choose_engine(
    config: ExtractConfig,
    cache_dir,
    *,
    probe=None,
    n_images: int = 0,
    notify=None,
    int8_meta: dict | None = None,
    calibration=None,
    verified_only: bool = False,
):
    """The one way an engine is chosen: extraction, int8 quantization, the Embedder, prediction, `cache verify
    --recompute`, fine-tuning views and cluster workers all come here, so they cannot disagree.

    int8: the saved int8 model that ``int8_meta`` (a cache's meta.json) records, else a new one quantized on the
    verified fp32 ONNX model from the images of ``calibration`` (a source and its manifest). fp32: the ONNX model
    an earlier run converted and verified under ``cache_dir`` (no TensorFlow is imported), else TensorFlow,
    swapped for ONNX when ``probe(input_size)`` gives a real batch to verify a conversion on (``_select_engine``;
    ``n_images`` tells ``auto`` whether converting pays). ``verified_only``: the verified ONNX model or None
    (cluster workers must compute what the client verified).
    """
    if is_onnx_path(config.backbone) and config.precision == "fp32":
        # the user's own graph: no TensorFlow model to verify against; checked against ONNX Runtime run directly
        return onnx_file_engine(config, cache_dir, probe=probe, notify=notify)
    if config.precision == "int8":
        if int8_meta is not None:
            return saved_int8_engine(config, int8_meta, cache_dir)
        if calibration is None:
            raise ValueError(
                "an int8 engine needs the cache's meta (int8_meta=) or calibration=(source, manifest)"
            )
        src, manifest = calibration
        fp32 = _int8_fp32_engine(config, src, manifest, Path(cache_dir), notify)
        return int8_engine(config, fp32, src, manifest, notify)
    engine = _verified_onnx_engine(config, cache_dir)
    if engine is not None or verified_only:
        return engine
    tf_engine = _tensorflow_engine(config)
    batch = probe(tf_engine.input_size) if probe is not None and config.engine != "tensorflow" else None
    if batch is None or not len(batch):
        return tf_engine
    return _select_engine(tf_engine, config, batch, cache_dir=cache_dir, notify=notify, n_images=n_images)


def _tensorflow_engine(config: ExtractConfig) -> TensorFlowEngine:
    """Build the feature model for a config as a compiled TensorFlow engine (``_select_engine`` may swap it)."""
    _tf.configure_threads(config.threads)
    engine = TensorFlowEngine(
        feature_model_of(config), jit_compile=config.xla, threads=config.threads, device=config.device
    )
    if config.device == "gpu" and config.engine == "tensorflow" and engine.device != "gpu":
        raise BackboneError(NO_TF_GPU)
    return engine


def _int8_fp32_engine(config, src, manifest, cache_dir, notify):
    """The verified fp32 ONNX engine of ``config`` (converted now if no earlier run did)."""
    if is_onnx_path(config.backbone):
        return onnx_file_engine(config.replace(precision="fp32"), cache_dir, notify=notify)
    if config.engine == "tensorflow":
        raise BackboneError(
            "precision='int8' runs a quantized ONNX model; drop engine='tensorflow' (or use precision='fp32')."
        )
    if not onnx_available():
        raise BackboneError(
            "precision='int8' needs ONNX Runtime and tf2onnx: pip install onnxruntime tf2onnx onnx (or use "
            "precision='fp32')."
        )
    fp32_config = config.replace(precision="fp32", engine="onnx")

    def probe(size: int) -> np.ndarray:
        items = manifest.items[: config.batch_size]
        return np.stack([src.load(it, size, config.resize, config.fast_decode) for it in items])

    engine = choose_engine(fp32_config, cache_dir, probe=probe, notify=notify)
    if engine.name != "onnx":
        raise BackboneError(
            f"precision='int8' needs the ONNX model of {config.backbone}, and it could not be converted or "
            "verified (see the warning above); use precision='fp32'."
        )
    return engine
