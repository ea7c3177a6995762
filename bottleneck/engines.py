"""Inference engines: a compiled forward pass from uint8 image batches to float32 features."""

from __future__ import annotations

import os

import numpy as np

from bottleneck.config import ExtractConfig


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_THREADS_SET = False


def configure_tensorflow_threads(intra: int | None = None, inter: int = 1) -> None:
    """Set TF thread pools once, before TF builds any op.

    TF's defaults start one pool per core for both intra- and inter-op work, which oversubscribes a 2-core
    machine that also decodes JPEGs; one inter-op thread loses nothing for a single sequential model.
    """
    global _THREADS_SET
    if _THREADS_SET:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra or cpu_count())
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # TF already initialised by the caller; keep its settings
    _THREADS_SET = True


class TensorFlowEngine:
    """Runs a frozen Keras feature model as one compiled graph (no per-call Keras overhead of model.predict)."""

    name = "tensorflow"

    def __init__(self, model, *, jit_compile: bool = False):
        import tensorflow as tf

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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, *feature_shape) float32."""
        return self._forward(batch).numpy()


def create_engine(config: ExtractConfig):
    """Build the feature model for a config and wrap it in the configured engine."""
    configure_tensorflow_threads()
    import keras

    from bottleneck.models import build_feature_model

    if config.weights == "none":
        # Random weights must still be a pure function of the cache key.
        keras.utils.set_random_seed(0)
    model = build_feature_model(
        config.backbone,
        weights=config.weights,
        image_size=config.image_size,
        layer=config.layer,
        pooling=config.pooling,
        preprocess=config.preprocess,
    )
    return TensorFlowEngine(model)
