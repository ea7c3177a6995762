"""Predicting new images with a saved run: the cache's backbone settings, then the run's head."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.config import ExtractConfig
from bottleneck.constraints import validate_params
from bottleneck.data import load_image, resize_image
from bottleneck.data.decode import IMAGE_EXTENSIONS, draft_size
from bottleneck.errors import HeadError, SourceError
from bottleneck.inference.chooser import choose_engine
from bottleneck.job_settings import PREDICT
from bottleneck.runs.folders import Run, load_run, run_cache


def list_images(paths: Sequence) -> list[Path]:
    """Image files from files and folders (folders searched recursively, sorted); SourceError when none."""

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(_images_in(p, IMAGE_EXTENSIONS))
            if not found:
                raise SourceError(f"folder {p} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SourceError(f"{p} does not exist; pass image files or folders of images.")
    if not out:
        raise SourceError("no images given; pass image files or folders of images.")
    return out


# The options of ``predict`` (and ``bottleneck predict``): classes shown per image, images per forward pass.


def _images_in(folder: Path, extensions) -> list[Path]:
    """Regular image files under ``folder``; unreadable subfolders are passed over (os.walk), hidden ones and
    symbolic links to folders are not entered, so a folder such as /proc ends in one line, not a traceback."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            f = Path(dirpath) / name
            if f.suffix.lower() in extensions and not name.startswith(".") and f.is_file():
                out.append(f)
    return out


def predict_images(
    run,
    images: Sequence,
    *,
    top: int = 3,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> list[dict]:
    """Class names and probabilities for new images with a saved run (or an exported model file), one dict per image: ``{"image", "top": [{"class",
    "label", "prob"}, ...]}`` most probable first.

    Images go through exactly what the cache was built with: the same backbone, weights, image size, layer,
    pooling, preprocessing (``choose_engine`` of the cache's config) and resize policy. The verified ONNX model
    next to the cache is used when there is one (no TensorFlow import).
    """
    return predict_with_engine(run, images, top=top, batch_size=batch_size, progress=progress)


@dataclass
class Scorer:
    """How a run (or an exported file) scores images: resize to ``image_size`` with ``resize``, then ``proba``."""

    image_size: int
    resize: str
    proba: Callable[[np.ndarray], np.ndarray]  # (N, S, S, 3) 0..255 pixels -> (N, classes) probabilities
    classes: np.ndarray
    names: list[str]
    fast_decode: bool = False  # JPEGs decoded at a reduced scale, as the run's cache was

    def load(self, path) -> np.ndarray:

        return resize_image(
            load_image(path, draft_size(self.image_size, self.fast_decode)), self.image_size, self.resize
        )


def run_scorer(run, engine_factory: Callable | None = None) -> Scorer:
    """The scoring of a saved run: the cache's backbone settings then the head (frozen-head runs), or the
    fine-tuned model; or of an exported model file. ``engine_factory(config)`` replaces ``choose_engine``."""
    from bottleneck.export.loaded import is_exported, load_exported

    if not isinstance(run, Run) and is_exported(run):
        model = load_exported(run)
        return Scorer(
            model.image_size,
            model.resize,
            model.predict_proba,
            model.classes_,
            model.class_names,
            model.fast_decode,
        )
    run = run if isinstance(run, Run) else load_run(run)
    head = run.head
    config = ExtractConfig.from_dict(run.summary["cache"]["config"])
    names = class_names_of(head.classes_, run.summary["cache"]["class_names"])
    if run.summary.get("kind") == "fine-tune":
        return Scorer(
            head.image_size, config.resize, head.predict_proba, head.classes_, names, config.fast_decode
        )
    if engine_factory is not None:
        engine = engine_factory(config)
    else:
        int8_meta = None
        if config.precision == "int8":  # the int8 model the cache was computed with (its meta names it)
            int8_meta = run_cache(run.summary).meta
        engine = choose_engine(config, Path(run.summary["cache"]["path"]).parent, int8_meta=int8_meta)
    if tuple(engine.feature_shape) != tuple(head.feature_shape_):
        raise HeadError(
            f"the backbone rebuilt from the run's cache config gives features of shape {tuple(engine.feature_shape)}, "
            f"but the head was trained on {head.feature_shape_}; the backbone files changed since the cache was made."
        )

    def proba(batch):
        return head.predict_proba(np.asarray(engine(np.asarray(batch, np.uint8)), np.float32))

    return Scorer(engine.input_size, config.resize, proba, head.classes_, names, config.fast_decode)


def predict_with_engine(
    run,
    images: Sequence,
    *,
    top: int = 3,
    batch_size: int = 32,
    engine_factory: Callable | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """``predict_images`` with ``engine_factory(config)`` in place of ``choose_engine`` (tests pass fakes)."""
    validate_params({"top": top, "batch_size": batch_size}, PREDICT)  # before any image or model is read
    paths = list_images(images)
    scorer = run_scorer(run, engine_factory)
    top = min(top, len(scorer.classes))
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        batch = np.stack([scorer.load(p) for p in chunk])
        proba = scorer.proba(batch)
        for p, row in zip(chunk, proba, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            results.append(
                {
                    "image": str(p),
                    "top": [
                        {
                            "class": scorer.names[i],
                            "label": _plain(scorer.classes[i]),
                            "prob": float(row[i]),
                        }
                        for i in best
                    ],
                }
            )
        if progress:
            progress("predict", min(start + batch_size, len(paths)), len(paths))
    return results


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def class_names_of(classes, names) -> list[str]:
    """The name of each class column: a cache's class name for integer labels, else the label itself."""
    return [_label_name(c, names) for c in classes]


def _label_name(label, names) -> str:
    """A cache's class name for an integer label; other labels (a head fitted on strings) name themselves."""
    if isinstance(label, int | np.integer) and 0 <= label < len(names):
        return str(names[label])
    return str(label)
