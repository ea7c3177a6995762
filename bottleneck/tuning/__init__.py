"""Fine-tuning: a run's backbone and head as one model, its top blocks trained on the cache's images."""

from bottleneck._lazy import lazy_names

_NAMES = {
    "fine_tune": "bottleneck.tuning.fine_tuning",
    "TuneSettings": "bottleneck.tuning.recipe",
    "assemble": "bottleneck.tuning.assembly",
    "Assembled": "bottleneck.tuning.assembly",
    "open_cache_images": "bottleneck.tuning.images",
    "AUGMENTATIONS": "bottleneck.tuning.images",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())
