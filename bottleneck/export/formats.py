"""Writing a run as one model file: uint8 images (N, S, S, 3) in, class probabilities out, preprocessing inside.

Formats: ``keras`` (a .keras file of built-in layers: ``keras.saving.load_model``), ``onnx``
(``onnxruntime.InferenceSession``), ``savedmodel`` (``tf.saved_model.load``, signature ``serving_default``) and
``tflite`` (the TFLite interpreter). Each carries its class names: a ``bottleneck.json`` member of the .keras
archive, ONNX ``metadata_props``, a ``class_names`` variable and ``assets/bottleneck.json`` of the SavedModel;
and every format, .tflite included, has the same metadata as JSON in ``<file>.json`` beside it (``class_names``
a JSON list: any name survives). Every file is written under a temporary name and moved into place once
complete. The sidecar records the sha256 of the exported file (of every file of a SavedModel folder) and is
sealed, so reading the export back (``export.loaded``) refuses an edited or damaged file or sidecar.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from bottleneck import _tf
from bottleneck._io import file_hash, json_plain, replace_atomic, seal_of, temp_path, write_json_atomic
from bottleneck._onnx import function_to_onnx
from bottleneck._ownership import atomic_dir
from bottleneck.errors import ExportError, one_of

FORMATS = ("keras", "onnx", "savedmodel", "tflite")
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "savedmodel": "", "tflite": ".tflite"}
META_MEMBER = "bottleneck.json"  # inside a .keras archive, and in a SavedModel's assets/
PACKAGES = {"onnx": "tf2onnx (pip install tf2onnx onnx)", "tflite": "tensorflow with tf.lite"}


def default_path(run_path: Path, fmt: str) -> Path:
    return Path(run_path) / "export" / f"model{SUFFIXES[fmt]}"


def uint8_model(model):
    """``model`` (float 0..255 pixels -> probabilities) behind a uint8 input: what every format exports."""
    keras = _tf.keras()

    size = tuple(int(d) for d in model.input_shape[1:])
    inputs = keras.Input(size, dtype="uint8", name="images")
    # Rescaling casts to float32 (its compute dtype) and multiplies by 1: a built-in cast.
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    return keras.Model(inputs, model(x, training=False), name="bottleneck_export")


def check_portable(model, fmt: str) -> None:
    """A .keras file must load with plain Keras: refuse layers Keras does not define (a model file's own
    layers, AlexNet's local response normalisation)."""
    foreign = sorted(
        {type(lyr).__name__ for lyr in _walk(model) if not type(lyr).__module__.startswith("keras")}
    )
    if foreign:
        raise ExportError(
            f"this model has layers Keras itself does not define ({', '.join(foreign)}), so a .{fmt} file would "
            "need bottleneck to load; export with format='onnx' or format='savedmodel' instead."
        )


def _walk(model):
    for lyr in model.layers:
        yield lyr
        if hasattr(lyr, "layers"):
            yield from _walk(lyr)


def write(model, path: Path, fmt: str, meta: dict) -> Path:
    """Write the uint8 ``model`` to ``path`` in ``fmt`` with ``meta`` (class names, image size, ...) inside, and
    ``meta`` with the file's sha256 in the sealed sidecar beside it."""
    if fmt not in FORMATS:
        raise one_of("format", fmt, FORMATS)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = {"keras": _keras, "onnx": _onnx, "savedmodel": _savedmodel, "tflite": _tflite}[fmt](
        model, path, meta
    )
    write_sidecar(written, {**meta, "format": fmt})
    return written


def write_sidecar(path: Path, record: dict, sha256: str | None = None) -> dict:
    """Write ``<path>.json``: ``record`` with the sha256 of the exported file or folder (``sha256``: given, or
    computed here), sealed (``seal``: the checksum of the rest). Returns what was written."""
    record = json_plain({**record, "sha256": sha256 or file_hash(path)})
    record["seal"] = seal_of(record)
    write_json_atomic(sidecar(path), record, indent=2)
    return record


def _keras(model, path: Path, meta: dict) -> Path:
    check_portable(model, "keras")
    tmp = temp_path(path, suffix=".keras")
    try:
        model.save(tmp)
        # Keras reads the archive members it knows and ignores others: the metadata travels inside the file.
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(META_MEMBER, json.dumps(meta, indent=1))
        replace_atomic(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _signature(model):
    tf = _tf.tensorflow()
    s = model.input_shape
    return [tf.TensorSpec([None, s[1], s[2], s[3]], tf.uint8, name="images")]


def _onnx(model, path: Path, meta: dict) -> Path:
    tf = _tf.tensorflow()
    sig = _signature(model)
    fn = tf.function(lambda x: model(x, training=False), input_signature=sig)
    with _tf.environment_kept():  # tf2onnx sets TF_CPP_MIN_LOG_LEVEL for the process on import
        try:
            import onnx  # noqa: F401 (saved with in _save_onnx; checked here to name the packages)
            import tf2onnx  # noqa: F401 (imported by function_to_onnx; checked here to name the packages)
        except ImportError:
            raise ExportError(
                f"format='onnx' needs {PACKAGES['onnx']}; install it and export again."
            ) from None
    proto = function_to_onnx(fn, sig, input_name="images", output_name="probabilities")
    return _save_onnx(proto, path, meta)


def write_onnx(proto, path: Path, meta: dict) -> Path:
    """Write an ONNX ``proto`` (uint8 images -> probabilities, made without Keras: a run on an ONNX model
    file's features) with ``meta`` inside and in the sealed sidecar, as ``write`` does for Keras models."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = _save_onnx(proto, path, meta)
    write_sidecar(written, {**meta, "format": "onnx"})
    return written


def _save_onnx(proto, path: Path, meta: dict) -> Path:
    import onnx

    tmp = temp_path(path)
    for key, value in (("class_names", json.dumps(meta["class_names"])), ("bottleneck", json.dumps(meta))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.save(proto, str(tmp))
        replace_atomic(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _savedmodel(model, path: Path, meta: dict) -> Path:
    tf = _tf.tensorflow()
    keras = _tf.keras()

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda images: {"probabilities": model(images, training=False)}, _signature(model)
    )
    # Loaded back as `loaded.class_names[0]` (a string tensor), next to the serving signature.
    archive.add_variable_collection(
        "class_names", [tf.Variable(meta["class_names"], trainable=False, name="class_names")]
    )
    # Built aside, every file fsynced, renamed into place (TensorFlow's own tmp+rename syncs nothing).
    with atomic_dir(path, "savedmodel", force=True) as tmp:  # export_run checked ``path`` before the work
        with _tf.environment_kept():
            archive.write_out(str(tmp), verbose=False)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / META_MEMBER).write_text(json.dumps(meta, indent=1))
    return path


def _tflite(model, path: Path, meta: dict) -> Path:
    import tempfile

    tf = _tf.tensorflow()
    # Through a SavedModel: converting a concrete function of a Keras 3 model directly leaves its variables
    # unread (NaN weights in the .tflite file).
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tflite-") as tmpdir:
        saved = _savedmodel(model, Path(tmpdir) / "saved", meta)
        with _tf.environment_kept():
            data = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        replace_atomic(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # A .tflite file has no place for metadata without the tflite-support package: the class names (a JSON list,
    # so any name survives) and the rest of the metadata go in the sidecar (``write``) that `export` completes
    # with its verification. (A model.labels.txt that earlier versions wrote is left alone: nothing proves whose
    # a file of that name is.)
    return path


def sidecar(path: Path) -> Path:
    """Beside every export: its metadata (``class_names`` as a JSON list, in output column order) and the
    verification record (``model.onnx`` -> ``model.onnx.json``); a .tflite file's only metadata."""
    return path.with_name(path.name + ".json")
