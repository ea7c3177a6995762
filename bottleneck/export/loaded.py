"""Exported model files read back: one ``predict_proba(uint8 images)`` whatever the format."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.errors import ExportError
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


def load_exported(path) -> ExportedModel:
    """Read an exported model back with its format's own runtime (Keras, ONNX Runtime, TensorFlow, TFLite)."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p} does not exist; pass a file written by `bottleneck export`.")
    try:
        if p.is_dir():
            return _savedmodel(p)
        suffix = p.suffix.lower()
        if suffix == ".keras":
            return _keras(p)
        if suffix == ".onnx":
            return _onnx(p)
        if suffix == ".tflite":
            return _tflite(p)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"cannot read exported model {p} ({type(exc).__name__}: {str(exc)[:200]})."
        ) from None
    raise ExportError(f"{p} is not an exported model (.keras, .onnx, .tflite or a SavedModel folder).")


def _meta(text: str | None, p: Path) -> dict:
    if not text:
        raise ExportError(
            f"{p} has no bottleneck metadata (class names); export it again with `bottleneck export`."
        )
    return json.loads(text)


def _keras(p: Path) -> ExportedModel:
    from bottleneck.backbones.model_file import load_keras

    with zipfile.ZipFile(p) as zf:
        text = zf.read(META_MEMBER).decode() if META_MEMBER in zf.namelist() else None
    model = load_keras(p, ExportError, "export the run again with `bottleneck export`")
    return ExportedModel(p, _meta(text, p), lambda x: model.predict_on_batch(x))


def _onnx(p: Path) -> ExportedModel:
    import onnxruntime as ort

    session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    name = session.get_inputs()[0].name
    return ExportedModel(p, _meta(props.get("bottleneck"), p), lambda x: session.run(None, {name: x})[0])


def _savedmodel(p: Path) -> ExportedModel:
    tf = _tf.tensorflow()
    loaded = tf.saved_model.load(str(p))
    serve = loaded.signatures["serving_default"]
    meta_file = p / "assets" / META_MEMBER
    text = meta_file.read_text() if meta_file.is_file() else None

    def fn(x):
        out = serve(images=tf.constant(x))
        return next(iter(out.values())).numpy()

    return ExportedModel(p, _meta(text, p), fn)


def _tflite(p: Path) -> ExportedModel:
    side = sidecar(p)
    meta = _meta(side.read_text() if side.is_file() else None, p)
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

    return ExportedModel(p, meta, fn)


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
