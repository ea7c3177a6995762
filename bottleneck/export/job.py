"""`export`: a run (frozen head or fine-tuned) as one verified model file."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bottleneck._io import seal_of
from bottleneck._ownership import ASIDE, aside_path, sidecar_record
from bottleneck.backbones.onnx_file import is_onnx_path
from bottleneck.errors import CacheError, ExportError, TuneError, one_of
from bottleneck.export.formats import (
    FORMATS,
    default_path,
    sidecar,
    uint8_model,
    write,
    write_onnx,
    write_sidecar,
)
from bottleneck.export.loaded import load_exported
from bottleneck.export.onnx_compose import composed_model
from bottleneck.runs.folders import Run, load_run, run_cache
from bottleneck.runs.predict import class_names_of, run_scorer
from bottleneck.tuning.assembly import assemble
from bottleneck.tuning.images import open_cache_images

# Largest difference in probability between a float export and `bottleneck predict` on the same images.
EXPORT_TOLERANCE = 1e-4


def export_run(
    run, out=None, *, format: str = "keras", force: bool = False, source=None, samples: int = 16
) -> dict:  # noqa: A002
    """Write ``run`` as one model from uint8 images (N, S, S, 3) to class probabilities, then verify it.

    The file is loaded fresh with its own runtime and compared with ``bottleneck predict`` (the run's own
    scoring) on ``samples`` images of the cache's source (``source``: where they are now, if they moved);
    above ``EXPORT_TOLERANCE`` the file is removed and ExportError raised. ``out`` defaults to
    ``RUN/export/model.<ext>``; an existing ``out`` is replaced only with ``force``. Returns the record also
    written beside the file (``<out>.json``): format, path, class names, image size, max difference, the
    file's sha256 (the one checked as the file was read back) and the record's seal.
    """

    fmt = format
    if fmt not in FORMATS:
        raise one_of("format", fmt, FORMATS)
    run = run if isinstance(run, Run) else load_run(run)
    backbone = run.summary["cache"]["config"]["backbone"]
    onnx_file = is_onnx_path(backbone)
    if onnx_file and fmt != "onnx":
        raise ExportError(
            f"this run reads features of an ONNX model file ({backbone}), which a {fmt} file cannot hold (no "
            "Keras graph to save); export it with format='onnx': the model and the head joined in one ONNX file."
        )
    out = Path(out) if out is not None else default_path(run.path, fmt)
    if not out.name or out.name in (".", ".."):
        raise ExportError(f"out={str(out)!r} names no file; pass a path such as out=model.{fmt}.")
    problem = target_problem(out)
    if problem and not force:
        raise ExportError(
            f"refusing to replace {out}: {problem}. Pass another out=PATH, or force=True to move it aside "
            f"(to {out.name}{ASIDE}<time>) and export anew."
        )
    scorer = run_scorer(run)
    model, meta = _model_and_meta(run, scorer, onnx_file)
    pixels = _sample_images(run, scorer, source, samples)
    moved = _move_aside(out) if problem else []  # only now: a run that fails above moved nothing
    t0 = time.perf_counter()
    written = write_onnx(model, out, meta) if onnx_file else write(uint8_model(model), out, fmt, meta)
    seconds = time.perf_counter() - t0
    try:
        exported = load_exported(written)
        got = exported.predict_proba(pixels)
        want = scorer.proba(pixels)
        difference = float(np.abs(got - want).max())
        if not difference <= EXPORT_TOLERANCE:  # NaN fails too
            raise ExportError(
                f"the exported {fmt} model differs from `bottleneck predict` by {difference:.2g} in probability on "
                f"{len(pixels)} images (allowed {EXPORT_TOLERANCE:g}); nothing was kept. Try another format."
            )
    except BaseException:
        _remove(written)
        raise
    record = {
        **meta,
        "format": fmt,
        "path": str(written),
        "seconds": round(seconds, 3),
        "verification": {
            "images": int(len(pixels)),
            "max_difference": difference,
            "against": "bottleneck predict",
        },
    }
    # The sha256 the read-back checked: the file verified is the file recorded.
    written_record = write_sidecar(written, record, sha256=exported.meta["sha256"])
    return written_record | ({"moved_aside": [str(p) for p in moved]} if moved else {})


def target_problem(out: Path) -> str | None:
    """Why ``out`` (and its sidecar ``<out>.json``) may not be replaced by an export, or None: nothing there, or
    an export of bottleneck's proven by its sealed sidecar (the file's digest as written)."""
    side = sidecar(out)
    if out.is_symlink():
        return "it is a symbolic link"
    if out.exists():
        if sidecar_record(out) is None:
            return f"no sealed {side.name} beside it proves bottleneck exported it as it is now"
        return None
    if side.is_symlink() or (side.exists() and not _sealed(side)):
        return f"{side.name}, where the export's record goes, is a file bottleneck did not write"
    return None


def _sealed(path: Path) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "sha256" in record and record.get("seal") == seal_of(record)


def _move_aside(out: Path) -> list[Path]:
    """``force``: the old file or folder and its sidecar moved to visible siblings (never deleted)."""
    moved = []
    for p in (out, sidecar(out)):
        if p.exists() or p.is_symlink():
            aside = aside_path(p)
            os.replace(p, aside)
            moved.append(aside)
    return moved


def _model_and_meta(run, scorer, onnx_file: bool = False) -> tuple[object, dict]:
    """The float end-to-end Keras model of a run (the composed ONNX model of a run on an ONNX model file's
    features) and the metadata every format carries."""
    if onnx_file:
        model = composed_model(run)
    elif run.summary.get("kind") == "fine-tune":
        model = run.head.model
    else:
        model = assemble(run).model
    cache = run.summary["cache"]

    classes = np.asarray(run.head.classes_)
    meta = {
        "classes": [c.item() if isinstance(c, np.generic) else c for c in classes],
        "class_names": class_names_of(classes, cache["class_names"]),
        "image_size": int(scorer.image_size),
        "resize": scorer.resize,
        "fast_decode": scorer.fast_decode,
        "input": "uint8 RGB images (N, S, S, 3), 0..255, resized as `resize` says",
        "output": "class probabilities (N, classes), columns in class_names order",
        "backbone": cache["config"]["backbone"],
        "head": run.summary.get("head"),
        "fine_tuned": run.summary.get("kind") == "fine-tune",
        "run": str(run.path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return model, meta


def _sample_images(run, scorer, source, samples: int) -> np.ndarray:
    """uint8 images of ``samples`` rows (all rows of a smaller cache): spread over the test split, topped up from
    val, then train, when test has fewer."""

    try:
        cache = run_cache(run.summary)
        with open_cache_images(cache, source=source, size=scorer.image_size) as images:
            parts, left = [], samples
            for split in (s for s in ("test", "val", "train") if s in cache.splits):
                n = images.n(split)
                if left <= 0 or not n:
                    continue
                rows = np.unique(np.linspace(0, n - 1, min(left, n)).round().astype(int))
                parts.append(images.pixels(split, rows).astype(np.uint8))
                left -= len(rows)
            return np.concatenate(parts)
    except (CacheError, TuneError) as exc:
        raise ExportError(
            f"cannot read sample images to verify the export ({exc}); pass source=PATH where the run's images are."
        ) from None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)
