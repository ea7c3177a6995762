"""bottleneck: cache frozen-backbone image features once, then train and compare small heads in seconds.

The public API, loaded on first use so that ``import bottleneck`` stays light (no TensorFlow) and changes nothing
global: no environment variables, no import hooks, no seeds.

    extract(source, ...)          -> ExtractResult with a .cache   (bottleneck.inference.runner)
    open_cache(path)              -> Cache: features / labels / ids per split
    Embedder(backbone=...)        scikit-learn transformer: images -> features, no cache folder
    LogRegHead, LinearHead, MLPHead, SigmoidHead, PoolDenseHead, make_head, load_head
    fit_head, compare, predict_images, load_run
    inspect_cache(cache, ...)     -> Inspection: duplicates, leaks, label errors, map, one offline page
    list_backbones(pattern), get_spec(name), ExtractConfig, BottleneckError
    save_onnx_preprocessing(model.onnx, ...)  MODEL.onnx.json: an ONNX backbone's preprocessing beside it
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "extract": "bottleneck.inference.runner",
    "ExtractResult": "bottleneck.inference.runner",
    "Embedder": "bottleneck.inference.embedder",
    "open_cache": "bottleneck.cache",
    "Cache": "bottleneck.cache",
    "write_arrays": "bottleneck.cache",
    "ExtractConfig": "bottleneck.config",
    "list_backbones": "bottleneck.backbones",
    "get_spec": "bottleneck.backbones",
    "save_onnx_preprocessing": "bottleneck.backbones.onnx_preprocess",
    "open_source": "bottleneck.data",
    "LogRegHead": "bottleneck.heads",
    "LinearHead": "bottleneck.heads",
    "MLPHead": "bottleneck.heads",
    "SigmoidHead": "bottleneck.heads",
    "PoolDenseHead": "bottleneck.heads",
    "make_head": "bottleneck.heads",
    "load_head": "bottleneck.heads",
    "fit_head": "bottleneck.runs",
    "compare": "bottleneck.runs",
    "predict_images": "bottleneck.runs",
    "load_run": "bottleneck.runs",
    "inspect_cache": "bottleneck.inspection",
    "BottleneckError": "bottleneck.errors",
}

__all__ = sorted(_LAZY)

from bottleneck._lazy import lazy_names  # noqa: E402  (after __version__ and the table it serves)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
