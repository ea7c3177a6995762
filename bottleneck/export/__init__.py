"""Export: a run as one verified model file (Keras, ONNX, SavedModel, TFLite), and those files read back."""

from bottleneck._lazy import lazy_names

_NAMES = {
    "FORMATS": "bottleneck.export.formats",
    "export_run": "bottleneck.export.job",
    "load_exported": "bottleneck.export.loaded",
    "is_exported": "bottleneck.export.loaded",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())
