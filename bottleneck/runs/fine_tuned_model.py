"""A whole model as a run's "head": pixels in, class probabilities out (fine-tuned runs, exported files).

Frozen-head runs score cached features; a fine-tuned run changed its backbone, so it scores images. This
class gives such a model the parts of the head interface that `predict` and `evaluate` use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck.backbones.model_file import load_keras
from bottleneck.errors import HeadError
from bottleneck.heads.saved import classes_from_json


class WholeModel:
    """A keras model from float32 (N, S, S, 3) 0..255 RGB pixels to (N, classes) probabilities."""

    name = "fine-tune"

    def __init__(self, model, summary: dict):
        self.model = model

        self.classes_ = classes_from_json(summary["classes"])
        self.class_names = list(summary["class_names"])
        self.image_size = int(summary["image_size"])
        self.resize = (summary.get("cache") or {}).get("config", {}).get("resize", "squash")
        self.history_ = summary.get("history") or {}
        self.trained_on_ = None

    @classmethod
    def load(cls, path, summary: dict) -> WholeModel:

        fix = f"the fine-tuned run {path} is unusable: fine-tune it again"
        return cls(load_keras(Path(path) / "model.keras", HeadError, fix), summary)

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.asarray(pixels, np.float32)), np.float64)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(pixels), axis=1)]
