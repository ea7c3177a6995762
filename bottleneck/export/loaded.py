"""Exported model files read back: one ``predict_proba(uint8 images)`` whatever the format."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck._io import file_problem, read_json, seal_of
from bottleneck.backbones.model_file import load_keras
from bottleneck.errors import ExportError, first_line
from bottleneck.export.formats import META_MEMBER, sidecar


def is_exported(path) -> bool:
    """Whether ``path`` is an exported model (a file or SavedModel folder), not a run folder."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() in (".keras", ".onnx", ".tflite")
    return (p / "saved_model.pb").is_file()


class ExportedModel:
    """An exported file: ``predict_proba`` of uint8 (N, S, S, 3) RGB images, ``classes_``, ``class_names``,
    ``image_size`` and the ``resize`` policy images were fitted with."""

    name = "exported"

    def __init__(self, path: Path, meta: dict, fn):
        self.path = path
        self.meta = meta
        self._fn = fn
        self.classes_ = np.asarray(meta["classes"])
        self.class_names = list(meta["class_names"])
        self.image_size = int(meta["image_size"])
        self.resize = meta.get("resize", "squash")
        self.fast_decode = bool(meta.get("fast_decode", False))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(np.ascontiguousarray(images, dtype=np.uint8)), np.float64)


REDO = "export the run again with `bottleneck export`"
# What a format's runtime raises on a file it cannot read is anything (Keras, ONNX Runtime, TensorFlow, TFLite).


def load_exported(path) -> ExportedModel:
    """Read an exported model back with its format's own runtime (Keras, ONNX Runtime, TensorFlow, TFLite).

    Its sidecar (``<file>.json``) is checked first: its seal, then the file's sha256 it records; the metadata
    inside the file (where the format has room) must agree with it. ExportError in one line, naming the file and
    the fix, when anything was edited or damaged."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p} does not exist; pass a file written by `bottleneck export`.")
    loader = _LOADERS.get("savedmodel" if p.is_dir() else p.suffix.lower())
    if loader is None:
        raise ExportError(f"{p} is not an exported model (.keras, .onnx, .tflite or a SavedModel folder).")
    record = read_sidecar(p)
    try:
        return loader(p, record)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"cannot read exported model {p} ({first_line(exc, with_type=True)}); {REDO}."
        ) from None


def read_sidecar(p: Path) -> dict:
    """The checked sidecar of the export ``p``: its seal matches its content and ``p`` has the sha256 it records.

    Sidecars written before they were sealed (no seal, no sha256) are accepted as they are: their metadata must
    still agree with the file's own (``_agree``)."""
    side = sidecar(p)
    record = read_json(
        side,
        ExportError,
        missing=f"{side} is missing: {p} cannot be checked for damage without the record `bottleneck export` "
        f"wrote beside it; copy it along with the model, or {REDO}.",
        redo=REDO,
    )
    if not isinstance(record, dict):
        raise ExportError(f"{side} holds a JSON {type(record).__name__}, not an export's record; {REDO}.")
    if ("seal" in record or "sha256" in record) and record.get("seal") != seal_of(record):
        raise ExportError(
            f"{side} was edited or damaged after the export was written (its seal does not match its content); "
            f"{REDO}."
        )
    if "sha256" in record:
        problem = file_problem(p, record["sha256"], side.name)
        if problem:
            raise ExportError(f"{p} {problem}; {REDO}.")
    if (
        not isinstance(record.get("class_names"), list)
        or "classes" not in record
        or "image_size" not in record
    ):
        raise ExportError(f"{side} has no class names or image size; {REDO}.")
    return record


def _agree(p: Path, inside: dict, record: dict) -> None:
    """ExportError unless the metadata stored inside the file says what its checked sidecar says."""
    for key, value in inside.items():
        if key in record and record[key] != value:
            raise ExportError(
                f"the metadata inside {p} and {sidecar(p).name} disagree on {key} ({str(value)[:80]} inside, "
                f"{str(record[key])[:80]} beside it): one of them was edited; {REDO}."
            )


def _meta(text: str | None, p: Path) -> dict:
    if not text:
        raise ExportError(f"{p} has no bottleneck metadata (class names); {REDO}.")
    meta = json.loads(text)
    if not isinstance(meta, dict):
        raise ExportError(f"{p} has damaged bottleneck metadata (a JSON {type(meta).__name__}); {REDO}.")
    return meta


def _keras(p: Path, record: dict) -> ExportedModel:

    with zipfile.ZipFile(p) as zf:
        text = zf.read(META_MEMBER).decode() if META_MEMBER in zf.namelist() else None
    _agree(p, _meta(text, p), record)
    model = load_keras(p, ExportError, REDO)
    return ExportedModel(p, record, lambda x: model.predict_on_batch(x))


def _onnx(p: Path, record: dict) -> ExportedModel:
    import onnxruntime as ort

    session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    _agree(p, _meta(props.get("bottleneck"), p), record)
    if "class_names" in props:
        _agree(p, {"class_names": json.loads(props["class_names"])}, record)
    name = session.get_inputs()[0].name
    return ExportedModel(p, record, lambda x: session.run(None, {name: x})[0])


def _savedmodel(p: Path, record: dict) -> ExportedModel:
    tf = _tf.tensorflow()
    loaded = tf.saved_model.load(str(p))
    serve = loaded.signatures["serving_default"]
    meta_file = p / "assets" / META_MEMBER
    _agree(p, _meta(meta_file.read_text() if meta_file.is_file() else None, p), record)
    names = getattr(loaded, "class_names", None)
    if names:  # the variable beside the serving signature
        _agree(p, {"class_names": [n.decode() for n in names[0].numpy().tolist()]}, record)

    def fn(x):
        out = serve(images=tf.constant(x))
        return next(iter(out.values())).numpy()

    return ExportedModel(p, record, fn)


def _tflite(p: Path, record: dict) -> ExportedModel:
    # A .tflite file has no room for metadata: the checked sidecar is its only copy.
    interpreter = _interpreter(str(p))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def fn(x):
        # The interpreter's batch size is fixed once allocated: resize to this batch.
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return ExportedModel(p, record, fn)


_LOADERS = {"savedmodel": _savedmodel, ".keras": _keras, ".onnx": _onnx, ".tflite": _tflite}


def _interpreter(path: str):
    """The LiteRT interpreter when ai-edge-litert is installed, else TensorFlow's (deprecated, same runtime)."""
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        tf = _tf.tensorflow()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)
