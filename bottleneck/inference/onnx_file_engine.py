"""The engine of an ONNX model file: its feature model (``backbones.onnx_graph``) written once under the engines
folder, checked against ONNX Runtime running the user's graph directly on the same preprocessed pixels, and run
by ONNX Runtime. A graph fixed to a batch of N runs free batches when the check passes, else N images at a time."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bottleneck._io import replace_atomic, temp_path, write_json_atomic
from bottleneck.backbones.onnx_file import read_graph, resolve
from bottleneck.backbones.onnx_graph import direct_model, feature_model, pooled
from bottleneck.backbones.onnx_preprocess import normalization
from bottleneck.errors import BackboneError, first_line
from bottleneck.inference.engines import (
    OnnxEngine,
    Verification,
    fixed_batches,
    onnx_model_path,
    relative_difference,
)

# The feature model must give the user's graph's own features: cosine per image at least this (README).
MIN_COSINE = 0.9999
PROBE_IMAGES = 4  # noise images the check runs on when no real batch is given
EXTERNAL_DATA_BYTES = 1 << 30  # a feature model larger than this keeps its weights in a .data file beside it


@dataclass(frozen=True)
class FileRecord:
    """The passed check of a feature model against the user's graph, kept beside the feature model."""

    difference: float  # max |features - direct| / max |direct|
    min_cosine: float
    feature_shape: tuple
    columns: tuple  # (tensor, start, stop) per tap
    batch: int | None  # the fixed batch the feature model needs; None: any batch
    why_fixed: str = ""  # why free batches did not work, when batch is set


def _record_path(path: Path) -> Path:
    return path.with_suffix(".file.json")


def _read_record(path: Path) -> FileRecord | None:
    try:
        d = json.loads(_record_path(path).read_text())
        d["feature_shape"] = tuple(d["feature_shape"])
        d["columns"] = tuple(tuple(c) for c in d["columns"])
        return FileRecord(**d)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def onnx_file_engine(config, cache_dir, *, probe=None, notify=None) -> OnnxEngine:
    """The engine of ``config`` (an ONNX model file backbone): its feature model from the engines folder under
    ``cache_dir``, made and checked first when no earlier run did. ``probe(size)``: a real batch to check on
    (noise images otherwise)."""
    config = resolve(config)
    size = config.image_size
    path = onnx_model_path(config, size, cache_dir)
    record = _read_record(path)
    if record is None or not path.exists():
        if notify:
            notify(f"preparing {Path(config.backbone).name} as a feature model (once; kept in {path.parent})")
        batch = probe(size) if probe is not None else None
        if batch is None or not len(batch):
            batch = np.random.default_rng(0).integers(0, 256, (PROBE_IMAGES, size, size, 3), dtype=np.uint8)
        record = _prepare(config, path, batch[:8], notify)
    # a feature model fixed to a batch of N (record.batch) runs in slices of N: OnnxEngine reads it from the graph
    return OnnxEngine(
        path,
        size,
        record.feature_shape,
        config.threads,
        Verification(record.difference, record.feature_shape, None, record.columns),
        record.columns,
        device=config.device,
    )


def _session(model, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def direct_features(config, images: np.ndarray) -> tuple[np.ndarray, tuple]:
    """The features of ``images`` ((N, S, S, 3) uint8) from ONNX Runtime running the user's graph itself: pixels
    normalised in NumPy, each tap pooled in NumPy. (features, columns). What the feature model must equal."""
    config = resolve(config)
    graph = read_graph(config.backbone)
    taps = graph.taps(config.layer)
    x = normalization(config.preprocess, config.mean, config.std, config.channels)(images)
    if graph.layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, dtype=np.float16 if graph.dtype == "float16" else np.float32)
    session = _session(direct_model(graph, taps))
    parts = fixed_batches(x, graph.batch) if graph.batch else [x]  # a fixed batch: as the graph was exported
    outs = [session.run(list(taps), {graph.input_name: part}) for part in parts]
    per_tap = [
        pooled(np.concatenate([o[i] for o in outs])[: len(x)], graph.layout, config.pooling)
        for i in range(len(taps))
    ]
    widths = [int(np.prod(p.shape[1:])) for p in per_tap]
    ends = np.cumsum(widths)
    columns = tuple((t, int(e - w), int(e)) for t, w, e in zip(taps, widths, ends, strict=True))
    features = per_tap[0] if len(per_tap) == 1 else np.concatenate(per_tap, axis=1)
    return features, columns if config.pooling != "none" else ()


def _agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    a = got.reshape(len(got), -1).astype(np.float64)
    b = want.reshape(len(want), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # two zero rows (a ReLU map that stays dark on a probe image) agree; one zero row does not
    both_zero = (np.abs(a).max(1) == 0) & (np.abs(b).max(1) == 0)
    cos = np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1.0), both_zero.astype(float))
    return relative_difference(got, want), float(cos.min())


def _prepare(config, path: Path, images: np.ndarray, notify) -> FileRecord:
    """Write the feature model of ``config`` to ``path`` and its record, after checking it against the direct run."""
    graph = read_graph(config.backbone)
    taps = graph.taps(config.layer)
    norm = normalization(config.preprocess, config.mean, config.std, config.channels)
    try:
        want, columns = direct_features(config, images)
    except Exception as exc:  # ONNX Runtime refuses the user's graph itself
        raise BackboneError(
            f"ONNX Runtime cannot run {config.backbone} ({first_line(exc, with_type=True, limit=160)}); check that it "
            "loads with onnxruntime.InferenceSession, or export it again."
        ) from None
    why = ""
    for batch in (None, graph.batch) if graph.batch else (None,):
        model = feature_model(
            graph, size=config.image_size, taps=taps, pooling=config.pooling, norm=norm, batch=batch
        )
        try:
            session = _session(model)
            got = _run(session, images, batch)
        except Exception as exc:
            why = first_line(exc, with_type=True, limit=160)
            continue
        difference, cosine = _agreement(got, want)
        if got.shape == want.shape and cosine >= MIN_COSINE:
            if batch and notify:
                notify(
                    f"{Path(config.backbone).name} is fixed to a batch of {batch} and cannot run larger batches "
                    f"({why}); running {batch} image(s) at a time (export it with a dynamic batch axis to go faster)"
                )
            record = FileRecord(
                difference, cosine, tuple(got.shape[1:]), columns, batch, why if batch else ""
            )
            _save(model, path)
            write_json_atomic(_record_path(path), asdict(record))
            return record
        why = f"features differ: min cosine {cosine:.6f}, shape {got.shape[1:]} vs {want.shape[1:]}"
    raise BackboneError(
        f"the feature model of {config.backbone} does not reproduce its own outputs ({why}); please report it "
        "with the model, or pass another layer."
    )


def _run(session, images: np.ndarray, batch: int | None) -> np.ndarray:
    if not batch:
        return session.run(None, {"images": images})[0]
    parts = [session.run(None, {"images": part})[0] for part in fixed_batches(images, batch)]
    return np.concatenate(parts)[: len(images)]


def _save(model, path: Path) -> None:
    """Write ``model`` atomically; weights over 1 GiB go into ``<name>.data`` beside it (protobuf's 2 GiB limit)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        if model.ByteSize() > EXTERNAL_DATA_BYTES:
            onnx.save(model, str(tmp), save_as_external_data=True, location=path.name + ".data")
        else:
            onnx.save(model, str(tmp))
        replace_atomic(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
