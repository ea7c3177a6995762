"""Inference engines: a compiled forward pass from uint8 image batches to float32 features.

Every engine satisfies the ``Engine`` protocol; the runner, ``predict``, ``cache verify`` and the ``Embedder``
only use those fields.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from bottleneck import _tf
from bottleneck._io import replace_atomic, temp_path
from bottleneck._onnx import function_to_onnx
from bottleneck.backbones.onnx_file import is_onnx_path
from bottleneck.cache.key import library_versions, weights_identity
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError


@dataclass(frozen=True)
class Verification:
    """A passed check of an engine's features against the TensorFlow graph it was converted from."""

    difference: float  # max |features - TF features| / max |TF features| on a real batch
    feature_shape: tuple[int, ...]  # per-image feature shape the check saw
    faster: bool | None = None  # timed faster than TensorFlow on that batch; None: not timed (forced engine)
    columns: tuple = ()  # (layer, start, stop) of each layer in the feature vector (the TF model's ``columns``)


class Engine(Protocol):
    """(N, S, S, 3) uint8 images -> (N, *feature_shape) float32 features, S = ``input_size``."""

    name: str  # "tensorflow" | "onnx" | "onnx-int8" (recorded in the cache)
    input_size: int  # square input side in pixels
    feature_shape: tuple[int, ...]  # per-image output shape
    threads: int  # compute threads it runs with
    verification: Verification | None  # why its features can stand for TensorFlow's (None: it is TensorFlow)
    columns: tuple  # (layer, start, stop) of each layer in a pooled feature vector; () for spatial features

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TensorFlowEngine:
    """Runs a frozen Keras feature model as one compiled graph (no per-call Keras overhead of model.predict)."""

    name = "tensorflow"

    def __init__(self, model, *, jit_compile: bool = False, threads: int | None = None, device: str = "auto"):
        tf = _tf.tensorflow()

        self.threads = threads or _tf.cpu_count()
        # TensorFlow places the graph on a visible GPU by itself; "cpu" pins it to the CPU.
        self.device = "gpu" if device != "cpu" and tf.config.list_physical_devices("GPU") else "cpu"
        self._place = tf.device("/CPU:0" if self.device == "cpu" else "/GPU:0")
        self.verification = None
        self.model = model
        s = model.input_shape
        self.input_size = int(s[1])

        @tf.function(
            input_signature=[tf.TensorSpec([None, s[1], s[2], s[3]], tf.uint8)],
            jit_compile=jit_compile,
            reduce_retracing=True,
        )
        def forward(x):
            # uint8 crosses the host boundary (4x fewer bytes); the cast happens inside the graph.
            return model(tf.cast(x, tf.float32), training=False)

        self._forward = forward
        self.feature_shape = tuple(int(d) for d in model.output_shape[1:])
        self.columns = tuple(getattr(model, "columns", ()))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, *feature_shape) float32."""
        with self._place:
            return self._forward(batch).numpy()


# ONNX Runtime and TensorFlow sum in different orders; features agreeing within this fraction of the output
# scale (max |x| of the TF features) on a real batch are treated as the same features (see README).
ONNX_TOLERANCE = 1e-4


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the scale of b (its max |x|)."""
    scale = max(float(np.abs(b).max()), 1e-12)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) / scale


class OnnxEngine:
    """ONNX Runtime session over the exact graph of a TensorFlowEngine (preprocessing included)."""

    name = "onnx"

    def __init__(
        self,
        onnx_path: Path,
        input_size: int,
        feature_shape: tuple,
        threads: int | None = None,
        verification: Verification | None = None,
        columns: tuple = (),
        int8=None,
        device: str = "auto",
    ):
        import onnxruntime as ort

        self.threads = threads or _tf.cpu_count()
        self.verification = verification
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # Idle compute threads sleep instead of spinning: decoding threads share the cores, and a spinning pool
        # took the CPU they needed (a trivial backbone's compute phase: 2 470 -> 3 000 img/s on 2 cores), while
        # a full-size backbone alone ran at the same speed either way (Lite0: 214 vs 216 img/s).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = onnx_providers(device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(onnx_path), so, providers=providers)
        # The provider that took the graph (ONNX Runtime falls back to the CPU when a GPU provider cannot start).
        self.device = "cpu" if self.session.get_providers()[0] == "CPUExecutionProvider" else "gpu"
        if device == "gpu" and self.device != "gpu":
            raise BackboneError(
                f"device='gpu', but ONNX Runtime could not start {providers[0]} (no usable GPU); check the CUDA "
                "driver and onnxruntime-gpu's CUDA version, or use device='cpu'."
            )
        self._input = self.session.get_inputs()[0].name
        # A graph fixed to a batch of N (an ONNX file that cannot run free batches, and its int8 model) runs in
        # slices of N; None: any batch.
        first = self.session.get_inputs()[0].shape[0]
        self.batch = first if isinstance(first, int) and first > 0 else None
        self.input_size = input_size
        self.feature_shape = tuple(feature_shape)
        self.columns = tuple(tuple(c) for c in columns)
        self.path = Path(onnx_path)
        self.int8 = (
            int8  # the quantization record (inference.quantize.Int8Record) of an int8 model, else None
        )
        if int8 is not None:
            self.name = "onnx-int8"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.batch is None or len(batch) == self.batch:
            return self.session.run(None, {self._input: batch})[0]
        return np.concatenate(
            [self.session.run(None, {self._input: part})[0] for part in fixed_batches(batch, self.batch)]
        )[: len(batch)]


def fixed_batches(images: np.ndarray, size: int):
    """``images`` in slices of ``size``, the last one padded with black images (whose rows callers drop)."""
    for a in range(0, len(images), size):
        part = images[a : a + size]
        if len(part) < size:
            part = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), part.dtype)])
        yield part


# ONNX Runtime's GPU execution providers, best first: TensorRT where installed, then CUDA.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def onnx_providers(device: str, available) -> list[str]:
    """The execution providers to ask ONNX Runtime for, best first, always ending with the CPU.

    ``device`` "cpu": the CPU only; "auto": the GPU providers this onnxruntime build has, then the CPU; "gpu":
    the same, and an error naming what to install when the build has none.
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "gpu" and not gpu:
        raise BackboneError(
            "device='gpu', but this onnxruntime has no GPU provider (it has: "
            f"{', '.join(available) or 'none'}); pip install onnxruntime-gpu (instead of onnxruntime), or use "
            "device='cpu'."
        )
    return [*gpu, "CPUExecutionProvider"]


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tf2onnx", "onnx"))


# Bump when backbones.onnx_graph writes another feature model for the same settings.
ONNX_FILE_FORMAT = 1


def onnx_model_path(config: ExtractConfig, input_size: int, cache_dir) -> Path:
    """Where the converted model of a config lives: keyed by everything that changes the graph or its weights."""
    material = {
        "backbone": config.backbone,
        "weights": weights_identity(config),
        "input_size": input_size,
        "layer": config.layer,
        "pooling": config.pooling,
        "preprocess": config.preprocess,
        "versions": library_versions() | {"tf2onnx": metadata.version("tf2onnx")},
    }
    if is_onnx_path(config.backbone):  # a feature model made from the user's graph by bottleneck, not tf2onnx
        material.update(mean=config.mean, std=config.std, channels=config.channels, versions=ONNX_FILE_FORMAT)
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "engines" / f"{Path(config.backbone).stem}-{input_size}-{digest}.onnx"


def convert_to_onnx(tf_engine: TensorFlowEngine, path: Path) -> Path:
    """Convert the TF engine's compiled graph to ONNX, written atomically (a crash leaves no half file).

    Through ``_onnx.function_to_onnx``: constants a layer captures (Keras' Normalization in EfficientNet B0-B7)
    become part of the graph, not inputs the model would ask for at run time."""
    import onnx

    tf = _tf.tensorflow()
    path.parent.mkdir(parents=True, exist_ok=True)
    s = tf_engine.model.input_shape
    sig = [tf.TensorSpec([None, s[1], s[2], s[3]], tf.uint8, name="images")]
    fn = tf.function(lambda x: tf_engine._forward(x), input_signature=sig)
    proto = function_to_onnx(fn, sig, input_name="images", output_name="features")
    tmp = temp_path(path)
    try:
        onnx.save(proto, str(tmp))
        replace_atomic(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


NO_TF_GPU = (
    "device='gpu', but TensorFlow sees no GPU; install a CUDA build of TensorFlow "
    "(pip install 'tensorflow[and-cuda]'), use engine='onnx' with onnxruntime-gpu, or use device='cpu'."
)


def check_device(config: ExtractConfig) -> None:
    """Fail before any image is read (and before a cache hit) when ``device='gpu'`` cannot be honoured: by the
    ONNX engine's providers, or, for ``engine='tensorflow'``, by the GPUs TensorFlow sees."""
    if config.device == "gpu" and config.precision == "int8":
        # ONNX Runtime's GPU providers run a QDQ model through float kernels: not the features its agreement
        # record measured, so int8 stays on the CPU's integer (VNNI) kernels.
        raise BackboneError(
            "precision='int8' runs on the CPU's integer kernels; use device='auto' or device='cpu' with it, "
            "or precision='fp32' on the GPU."
        )
    if config.device != "gpu":
        return
    if config.engine == "tensorflow" or not onnx_available():
        # Checked here too, not only when the engine is built: a cache hit must not pass where a run would fail.
        if not _tf.tensorflow().config.list_physical_devices("GPU"):
            raise BackboneError(NO_TF_GPU)
        return
    import onnxruntime as ort

    onnx_providers("gpu", ort.get_available_providers())
