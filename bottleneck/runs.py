"""Runs of heads on caches: fit and save a run folder, load it, evaluate it, compare heads, predict new images."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck.data.arrays import FASHION_MNIST_CLASSES as _FM_NAMES
from bottleneck.data.arrays import idx_files, read_idx
from bottleneck.errors import BottleneckError, HeadError

Progress = Callable[[str, int, int], None]

METRICS_FILE = "metrics.json"
HEAD_DIR = "head"


@dataclass
class Run:
    """A fitted head and its summary (the content of metrics.json), saved under ``path`` (None: not saved)."""

    path: Path | None
    head: object
    summary: dict

    @property
    def metrics(self) -> dict:
        return self.summary["metrics"]


def _open(cache):
    from bottleneck.cache import Cache, open_cache

    return cache if isinstance(cache, Cache) else open_cache(cache)


def _cache_summary(cache) -> dict:
    return {
        "path": str(cache.path),
        "name": cache.path.name,
        "key": cache.key,
        "feature_shape": list(cache.feature_shape),
        "class_names": list(cache.class_names),
        "splits": {s: cache.n(s) for s in cache.splits},
        "config": cache.config.to_dict(),
    }


def _take_rows(X, rows: np.ndarray) -> np.ndarray:
    from bottleneck.heads.base import iter_blocks

    return np.concatenate([b for _, b in iter_blocks(X, np.asarray(rows))])


def split_metrics(head, cache, split: str, rows: np.ndarray | None = None, X=None) -> dict:
    """Metrics of a fitted head on a split of a cache (or on ``rows`` of it), with the cache's class names."""
    from bottleneck.evaluate import classification_metrics

    X = cache.features(split) if X is None else X
    y = cache.labels(split)
    if rows is not None:
        X, y = _take_rows(X, rows), y[rows]
    return classification_metrics(
        y, head.predict_proba(X), classes=head.classes_, class_names=cache.class_names
    )


def _selection(head) -> dict:
    h = getattr(head, "history_", {}) or {}
    if "best_C" in h:
        return {"C": h["best_C"], "C values tried": len(h["C"]), "sweep rows": h.get("sweep_rows")}
    if "best_epoch" in h:
        return {"best epoch": h["best_epoch"], "epochs run": len(h.get("loss", []))}
    return {}


def _unique_dir(base: Path) -> Path:
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def fit_head(
    cache,
    head="logreg",
    *,
    params: dict | None = None,
    seed: int = 0,
    out=None,
    runs_dir="runs",
    save: bool = True,
    progress: Progress | None = None,
) -> Run:
    """Fit a head on a cache's ``train`` split, select on ``val``, report ``val`` and ``test`` metrics.

    ``head`` is a name (see ``bottleneck.heads.HEADS``; ``params`` are its hyper-parameters, ``seed`` its
    random_state) or an unfitted Head. The test split is only predicted after fitting: nothing about it
    reaches the head. When the cache has no val split, the head holds out a stratified part of train and
    the "val" metrics are on those rows. With ``save``, writes ``out`` (default ``runs_dir/<cache>-<head>``,
    made unique) holding head/, metrics.json, report.md, history.png and confusion.png.
    """
    from bottleneck.heads import Head, make_head

    cache = _open(cache)
    if isinstance(head, Head):
        if params:
            raise HeadError("pass params only with a head name; set them on the Head instance instead.")
    else:
        params = dict(params or {})
        params.setdefault("random_state", seed)
        head = make_head(head, **params)
    if "train" not in cache.splits:
        raise HeadError(
            f"cache {cache.path.name} has no train split (it has {', '.join(cache.splits)}); heads fit on train."
        )
    val = ("val",) if "val" in cache.splits else ()
    fit_args = {}
    if val:
        fit_args = {"X_val": cache.features("val"), "y_val": cache.labels("val")}
    t0 = time.perf_counter()
    head.fit(cache.features("train"), cache.labels("train"), progress=progress, **fit_args)
    fit_seconds = time.perf_counter() - t0

    metrics, notes = {}, []
    if val:
        metrics["val"] = split_metrics(head, cache, "val")
        if getattr(head, "refit", False):
            notes.append("refit on train + val: val metrics are on rows the head was trained on.")
    elif getattr(head, "holdout_", None) is not None:
        metrics["val"] = split_metrics(head, cache, "train", rows=head.holdout_)
        notes.append(
            f"no val split: val metrics are on {len(head.holdout_)} train rows held out from fitting."
        )
    if "test" in cache.splits:
        metrics["test"] = split_metrics(head, cache, "test")
    summary = {
        "head": head.name,
        "path": None,
        "fit_seconds": round(fit_seconds, 3),
        "params": head.get_params(),
        "selection": _selection(head),
        "streamed": bool(getattr(head, "streamed_", False)),
        "cache": _cache_summary(cache),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notes": notes,
        "metrics": metrics,
    }
    run = Run(None, head, summary)
    if save:
        path = (
            Path(out) if out is not None else _unique_dir(Path(runs_dir) / f"{cache.path.name}-{head.name}")
        )
        save_run(run, path, cache=cache)
    return run


def save_run(run: Run, path, *, cache=None) -> Path:
    """Write a run folder: head/, metrics.json, report.md, history.png, confusion.png."""
    from bottleneck.evaluate import plot_confusion, plot_history, render_report

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    run.path = path
    run.summary["path"] = str(path)
    run.head.save(path / HEAD_DIR, cache=cache)
    _write_json(path / METRICS_FILE, run.summary)
    (path / "report.md").write_text(render_report(run.summary))
    title = f"{run.summary['head']} on {run.summary['cache']['name']}"
    plot_history(run.head.history_, path / "history.png", title=title)
    metrics = run.summary["metrics"]
    if metrics:
        split = "test" if "test" in metrics else next(iter(metrics))
        m = metrics[split]
        plot_confusion(m["confusion"], m["labels"], path / "confusion.png", title=f"{title} ({split})")
    return path


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def load_run(path) -> Run:
    """A run folder written by ``fit_head``; HeadError when it is not one."""
    from bottleneck.heads import load_head

    path = Path(path)
    f = path / METRICS_FILE
    if not f.is_file():
        raise HeadError(
            f"{path} is not a fit-head run folder (no {METRICS_FILE}); pass the folder `bottleneck fit-head` printed."
        )
    try:
        summary = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise HeadError(f"{f} is corrupt ({exc}); fit the head again.") from None
    return Run(path, load_head(path / HEAD_DIR), summary)


def evaluate_run(run, cache, split: str = "test") -> dict:
    """Metrics of a saved run's head on a split of a cache with the same feature settings and classes.

    Returns ``{"run", "head", "cache", "split", "metrics": {split: {...}}}``; a cache of other features or
    classes raises HeadError before anything is predicted.
    """
    run = run if isinstance(run, Run) else load_run(run)
    cache = _open(cache)
    run.head.check_cache(cache)
    m = split_metrics(run.head, cache, split)
    return {
        "run": str(run.path),
        "head": run.head.name,
        "cache": str(cache.path),
        "split": split,
        "metrics": {split: m},
    }


# --- comparison --------------------------------------------------------------------------------------------


def head_applies(name: str, cache) -> str | None:
    """Why a head cannot run on a cache (shown in a comparison instead of failing it), or None."""
    if name == "sigmoid" and len(cache.class_names) != 2:
        return f"sigmoid needs 2 classes, the cache has {len(cache.class_names)}"
    if name == "pool-dense" and len(cache.feature_shape) != 3:
        return "pool-dense needs spatial features (--pooling none)"
    return None


@dataclass
class Comparison:
    """Results of ``compare``: ``rows`` (one per cache x head, mean and std over seeds), ``records`` (one per
    fit) and ``skipped`` heads with the reason."""

    rows: list[dict]
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)
    paths: dict = field(default_factory=dict)

    COLUMNS = ("cache", "backbone", "head", "split", "n_seeds")
    METRICS = ("accuracy", "balanced_accuracy", "fit_seconds")

    def markdown(self) -> str:
        from bottleneck.evaluate import markdown_table, mean_std

        headers = ["cache", "backbone", "head", "split", "accuracy", "balanced accuracy", "fit s"]
        rows = []
        for r in self.rows:
            vals = [
                [rec[m] for rec in self.records if rec["cache"] == r["cache"] and rec["head"] == r["head"]]
                for m in self.METRICS
            ]
            rows.append(
                [
                    r["cache"],
                    r["backbone"],
                    r["head"],
                    r["split"],
                    mean_std(vals[0]),
                    mean_std(vals[1]),
                    mean_std(vals[2], 2),
                ]
            )
        text = markdown_table(headers, rows)
        if self.rows and self.rows[0]["n_seeds"] > 1:
            text += f"\nmean ± std over {self.rows[0]['n_seeds']} seeds\n"
        for s in self.skipped:
            text += f"\nskipped {s['head']} on {s['cache']}: {s['reason']}"
        return text + ("\n" if self.skipped else "")

    def csv(self) -> str:
        from bottleneck.evaluate import csv_text

        headers = [*self.COLUMNS, *(f"{m}_{s}" for m in self.METRICS for s in ("mean", "std"))]
        return csv_text(headers, [[r.get(h) for h in headers] for r in self.rows])

    def to_json(self) -> dict:
        return {"rows": self.rows, "records": self.records, "skipped": self.skipped, "paths": self.paths}

    def save(self, out) -> dict:
        """Write comparison.md, comparison.csv, comparison.json and comparison.png into ``out``."""
        from bottleneck.evaluate import plot_comparison

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.paths = {k: str(out / f"comparison.{k}") for k in ("md", "csv", "json", "png")}
        (out / "comparison.md").write_text(self.markdown())
        (out / "comparison.csv").write_text(self.csv())
        if self.rows:
            plot_comparison(self.rows, out / "comparison.png")
        else:
            self.paths.pop("png")
        _write_json(out / "comparison.json", self.to_json())
        return self.paths


def _backbone_label(config) -> str:
    """The backbone plus whatever else sets its caches apart: "efficientnet_lite0@288[3 layers]/max"."""
    from bottleneck.config import layer_names

    names = layer_names(config.layer)
    label = config.backbone + (f"@{config.image_size}" if config.image_size else "")
    if names:
        label += f"[{names[0]}]" if len(names) == 1 else f"[{len(names)} layers]"
    return label + ("" if config.pooling == "avg" else f"/{config.pooling}")


def _load_for_compare(cache, split: str, budget: int):
    """A split in RAM when it fits the budget (every head reuses it), else the on-disk array."""
    from bottleneck.heads.base import nbytes, to_memory

    X = cache.features(split)
    return (to_memory(X) if nbytes(X) <= budget else X), cache.labels(split)


def compare(
    caches: Sequence,
    heads: Sequence[str] = ("logreg", "linear", "mlp"),
    *,
    seeds: Sequence[int] = (0,),
    params: dict | None = None,
    out=None,
    progress: Progress | None = None,
) -> Comparison:
    """Fit every head on every cache with every seed; report accuracy, balanced accuracy and fit seconds on
    ``test`` (``val`` when a cache has no test split), mean and std over seeds.

    ``params`` are hyper-parameters given to each head that has them (e.g. ``{"epochs": 20}`` reaches the
    Keras heads, not logreg); ``{"mlp": {"width": 512}}`` targets one head. Heads that do not apply to a
    cache (sigmoid with more than 2 classes, pool-dense on pooled features) are listed in ``skipped``.
    With ``out``, saves the table (markdown, CSV, JSON) and a plot there.
    """
    from bottleneck.evaluate import classification_metrics
    from bottleneck.heads import HEADS, canonical_name, head_params, make_head
    from bottleneck.heads.base import available_memory

    names = [canonical_name(h) for h in heads]
    seeds = list(seeds) or [0]
    params = dict(params or {})
    per_head = {k: params.pop(k) for k in list(params) if k in HEADS}
    for k in per_head:
        if k not in names:
            raise HeadError(f"parameters given for head {k}, which is not compared ({', '.join(names)}).")
    for k in params:
        if not any(k in head_params(n) for n in names):
            raise HeadError(f"no compared head ({', '.join(names)}) has a parameter {k!r}.")
    caches = [_open(c) for c in caches]
    if not caches:
        raise BottleneckError("no caches given; pass one or more cache folders.")
    records, skipped = [], []
    total = len(caches) * len(names) * len(seeds)
    done = 0
    for cache in caches:
        split = "test" if "test" in cache.splits else "val" if "val" in cache.splits else None
        budget = available_memory() // 3
        data = {s: _load_for_compare(cache, s, budget) for s in ("train", "val", split) if s in cache.splits}
        backbone = _backbone_label(cache.config)
        for name in names:
            reason = head_applies(name, cache)
            if reason:
                skipped.append({"cache": cache.path.name, "head": name, "reason": reason})
                done += len(seeds)
                continue
            valid = head_params(name)
            kw = {k: v for k, v in params.items() if k in valid} | per_head.get(name, {})
            for seed in seeds:
                head = make_head(name, **(kw | {"random_state": seed}))
                fit_args = {"X_val": data["val"][0], "y_val": data["val"][1]} if "val" in data else {}
                t0 = time.perf_counter()
                head.fit(*data["train"], **fit_args)
                seconds = time.perf_counter() - t0
                if split is None:  # neither val nor test: score the rows the head held out of train
                    eval_split = "train (held out)"
                    X = _take_rows(data["train"][0], head.holdout_)
                    y = data["train"][1][head.holdout_]
                else:
                    eval_split = split
                    X, y = data[split]
                m = classification_metrics(y, head.predict_proba(X), classes=head.classes_)
                records.append(
                    {
                        "cache": cache.path.name,
                        "backbone": backbone,
                        "head": name,
                        "seed": seed,
                        "split": eval_split,
                        "accuracy": m["accuracy"],
                        "balanced_accuracy": m["balanced_accuracy"],
                        "fit_seconds": seconds,
                        "selection": _selection(head),
                    }
                )
                done += 1
                if progress:
                    progress("fits", done, total)
    rows = []
    for cache in caches:
        for name in names:
            recs = [r for r in records if r["cache"] == cache.path.name and r["head"] == name]
            if not recs:
                continue
            row = {k: recs[0][k] for k in ("cache", "backbone", "head", "split")} | {"n_seeds": len(recs)}
            for m in Comparison.METRICS:
                v = np.array([r[m] for r in recs])
                row[f"{m}_mean"] = float(v.mean())
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            rows.append(row)
    result = Comparison(rows, records, skipped)
    if out is not None:
        result.save(out)
    return result


# --- prediction on new images ------------------------------------------------------------------------------


def list_images(paths: Sequence) -> list[Path]:
    """Image files from files and folders (folders searched recursively, sorted); SourceError when none."""
    from bottleneck.data.decode import IMAGE_EXTENSIONS
    from bottleneck.errors import SourceError

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
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


def predict_images(
    run,
    images: Sequence,
    *,
    top: int = 3,
    batch_size: int = 32,
    engine_factory: Callable | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Class names and probabilities for new images, one dict per image: ``{"image", "top": [{"class",
    "label", "prob"}, ...]}`` most probable first.

    Images go through exactly what the cache was built with: the same backbone, weights, image size, layer,
    pooling, preprocessing (``create_engine`` of the cache's config) and resize policy. The verified ONNX model
    next to the cache is used when there is one (no TensorFlow import). ``engine_factory`` replaces
    ``bottleneck.engines.create_engine`` (tests pass fakes).
    """
    from bottleneck.config import ExtractConfig

    run = run if isinstance(run, Run) else load_run(run)
    if top < 1:
        raise BottleneckError(f"--top {top} must be at least 1; e.g. --top 3.")
    paths = list_images(images)
    config = ExtractConfig.from_dict(run.summary["cache"]["config"])
    engine = None
    if engine_factory is None:
        from bottleneck.engines import create_engine as engine_factory
        from bottleneck.engines import verified_onnx_engine

        engine = verified_onnx_engine(config, Path(run.summary["cache"]["path"]).parent)
    engine = engine or engine_factory(config)
    head = run.head
    if tuple(engine.feature_shape) != tuple(head.feature_shape_):
        raise HeadError(
            f"the backbone rebuilt from the run's cache config gives features of shape {tuple(engine.feature_shape)}, "
            f"but the head was trained on {head.feature_shape_}; the backbone files changed since the cache was made."
        )
    from bottleneck.data import load_image, resize_image

    names = run.summary["cache"]["class_names"]
    top = min(top, len(head.classes_))
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        batch = np.stack([resize_image(load_image(p), engine.input_size, config.resize) for p in chunk])
        proba = head.predict_proba(np.asarray(engine(batch), np.float32))
        for p, row in zip(chunk, proba, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            results.append(
                {
                    "image": str(p),
                    "top": [
                        {
                            "class": _label_name(int(head.classes_[i]), names),
                            "label": int(head.classes_[i]),
                            "prob": float(row[i]),
                        }
                        for i in best
                    ],
                }
            )
        if progress:
            progress("predict", min(start + batch_size, len(paths)), len(paths))
    return results


def _label_name(label: int, names) -> str:
    return str(names[label]) if 0 <= label < len(names) else str(label)


def parse_params(items: list[str] | None, heads: list[str] | None = None) -> dict:
    """Head parameters from the command line: ['width=512', 'mlp.dropout=0.2'] -> {'width': 512,
    'mlp': {'dropout': 0.2}}. Values are read as JSON when they parse, else as strings; HEAD.KEY only when
    ``heads`` is given."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BottleneckError(f"--param {item!r} must be KEY=VALUE, e.g. --param width=512.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, name = key.rpartition(".")
        if dot:
            if heads is None:
                raise BottleneckError(
                    f"--param {item!r}: name the parameter without a head here, e.g. {name}={raw}."
                )
            out.setdefault(head, {})[name] = value
        else:
            out[key] = value
    return out


# --- example data ------------------------------------------------------------------------------------------

EXPORT_MARKER = ".bottleneck-export.json"
# Lite0's top activation plus the expanded inputs of its blocks 6d (7x7) and 6a (14x14), each average
# pooled: 3104-d. On Fashion-MNIST they beat the top layer alone by 1.6 points of test accuracy (README), because
# 28x28 grayscale clothing is far from ImageNet and mid-level features transfer better than the most semantic.
LITE0_MULTISCALE_LAYERS = "top_activation,block6d_expand_activation,block6a_expand_activation"


def example_layers(arg: str | None, backbone: str = "efficientnet_lite0") -> str | None:
    """The layer setting of the example scripts' ``--layer``: unset -> LITE0_MULTISCALE_LAYERS for Lite0 (the
    backbone's own feature layer for others), "default" -> the backbone's own feature layer, else as given."""
    if arg is None:
        return LITE0_MULTISCALE_LAYERS if backbone == "efficientnet_lite0" else None
    return None if arg == "default" else arg


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # the dataset's official download
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # Keras' mirror of the same files
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
# Folder-safe versions of the dataset's class names ("T-shirt/top" -> "t-shirt_top").
FASHION_MNIST_CLASSES = tuple(n.lower().replace("/", "_").replace(" ", "_") for n in _FM_NAMES)


def _idx(folder: Path) -> dict[tuple[str, str], Path]:
    """The IDX source's own file finder: {(split, "images"|"labels"): file}; {} when there is no folder."""
    return idx_files(folder) if folder.is_dir() else {}


def _download_fashion_mnist(dest: Path, urls=FASHION_MNIST_URLS) -> Path:
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    present = _idx(dest)
    for split, stems in FASHION_MNIST_FILES.items():
        for stem, part in zip(stems[:2], ("images", "labels"), strict=True):
            if (split, part) in present:
                continue
            for base in urls:
                tmp = dest / f".{stem}.gz.{os.getpid()}.tmp"
                try:
                    with urllib.request.urlopen(base + stem + ".gz", timeout=60) as r:
                        tmp.write_bytes(r.read())
                    os.replace(tmp, dest / f"{stem}.gz")
                    break
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    errors.append(f"{base}{stem}.gz: {exc}")
            else:
                raise BottleneckError(
                    f"cannot download Fashion-MNIST ({'; '.join(errors[-2:])}). Install Debian's files with "
                    f"`apt-get install dataset-fashion-mnist` or pass --source FOLDER with the four IDX files."
                )
    return dest


def export_fashion_mnist(
    out_dir,
    *,
    per_class: int | None = None,
    source=None,
    download: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Write Fashion-MNIST as PNG folders ``out_dir/{train,test}/<class>/<index>.png`` (28x28 grayscale).

    ``source`` is a folder with the four IDX files; default: Debian's ``dataset-fashion-mnist`` folder, else
    (with ``download``) the official download into ``~/.cache/bottleneck/fashion-mnist``. ``per_class``
    keeps the first N images of each class in each split (a quick subset). Returns {"path", "source",
    "splits": {split: n}, "classes", "hit"}; the same export into the same folder again is a hit that writes
    nothing (a marker file records what a finished export holds).
    """
    from PIL import Image

    out_dir = Path(out_dir)
    if per_class is not None and per_class < 1:
        raise BottleneckError(f"--per-class {per_class} must be at least 1, e.g. --per-class 100.")
    marker = out_dir / EXPORT_MARKER
    if out_dir.exists() and any(out_dir.iterdir()):
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            done = None
        if done and done.get("dataset") == "fashion-mnist" and done.get("per_class") == per_class:
            return done["result"] | {"hit": True}
        raise BottleneckError(
            f"{out_dir} is not empty and holds no finished export with --per-class {per_class}; pass a new "
            "folder (or remove this one) so no other images mix in."
        )
    if source is None:
        source = FASHION_MNIST_DIR
        if len(_idx(source)) < 4:
            if not download:
                raise BottleneckError(
                    f"Fashion-MNIST files not found in {source}; run `apt-get install dataset-fashion-mnist` "
                    "or pass --source FOLDER."
                )
            source = _download_fashion_mnist(Path.home() / ".cache" / "bottleneck" / "fashion-mnist")
    source = Path(source)
    arrays = {}
    found = _idx(source)
    for split, (img_stem, lbl_stem, n_expected) in FASHION_MNIST_FILES.items():
        img_file, lbl_file = found.get((split, "images")), found.get((split, "labels"))
        if img_file is None or lbl_file is None:
            raise BottleneckError(
                f"{source} lacks {img_stem}[.gz] or {lbl_stem}[.gz]; pass the folder with the four Fashion-MNIST IDX files."
            )
        x, y = read_idx(img_file), read_idx(lbl_file)
        if x.shape != (n_expected, 28, 28) or y.shape != (n_expected,) or y.max() > 9:
            raise BottleneckError(
                f"{img_file.name}/{lbl_file.name} hold {x.shape} images and {y.shape} labels; Fashion-MNIST {split} "
                f"has ({n_expected}, 28, 28) and ({n_expected},) with labels 0-9. Pass the original files."
            )
        keep = np.arange(len(y))
        if per_class is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)]))
        arrays[split] = (x, y, keep)
    total = sum(len(k) for _, _, k in arrays.values())
    done = 0
    counts = {}
    for split, (x, y, keep) in arrays.items():
        for c in FASHION_MNIST_CLASSES:
            (out_dir / split / c).mkdir(parents=True, exist_ok=True)
        for i in keep:
            Image.fromarray(x[i], "L").save(out_dir / split / FASHION_MNIST_CLASSES[y[i]] / f"{i:05d}.png")
            done += 1
            if progress and (done % 1000 == 0 or done == total):
                progress("export", done, total)
        counts[split] = int(len(keep))
    result = {
        "path": str(out_dir),
        "source": str(source),
        "splits": counts,
        "classes": list(FASHION_MNIST_CLASSES),
    }
    # Written last: an interrupted export has no marker, so it is never mistaken for a finished one.
    _write_json(marker, {"dataset": "fashion-mnist", "per_class": per_class, "result": result})
    return result | {"hit": False}
