"""Run folders: a fitted head and its metrics.json, report.md and plots, saved and loaded back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bottleneck._io import (
    file_hash,
    file_problem,
    json_plain,
    read_json,
    seal_of,
    write_json_atomic,
    write_text_atomic,
)
from bottleneck._ownership import atomic_dir
from bottleneck.cache.reader import open_cache
from bottleneck.errors import HeadError
from bottleneck.heads import load_head
from bottleneck.heads.base import HEAD_FILE
from bottleneck.report import plot_confusion, plot_history, render_report
from bottleneck.runs.fine_tuned_model import WholeModel

METRICS_FILE = "metrics.json"
HEAD_DIR = "head"
FILES = "files"  # metrics.json's {path in the run folder: sha256} of the files the run is loaded from


@dataclass
class Run:
    """A fitted head and its summary (the content of metrics.json), saved under ``path`` (None: not saved)."""

    path: Path | None
    head: object
    summary: dict

    @property
    def metrics(self) -> dict:
        return self.summary["metrics"]


def cache_summary(cache) -> dict:
    return {
        "path": str(cache.path),
        "name": cache.name,
        "key": cache.key,
        "feature_shape": list(cache.feature_shape),
        "class_names": list(cache.class_names),
        "splits": {s: cache.n(s) for s in cache.splits},
        "config": cache.config.to_dict(),
    }


def run_cache(summary: dict):
    """The cache a run was fitted on, opened from its summary: the layer subset it used of a wider cache."""

    info = summary.get("cache") or {}
    return matching_layers(open_cache(info.get("path")), (info.get("config") or {}).get("layer"))


def matching_layers(cache, layer: str | None):
    """``cache`` restricted to ``layer`` (a head's trained layer list) when it is a subset of a wider cache's
    layers; the cache as it is otherwise (the head's own checks then say what does not match)."""
    if layer and cache.config.layer != layer and cache.columns:
        names = {n for n, _, _ in cache.columns}
        if set(layer.split(",")) <= names:
            return cache.select(layer)
    return cache


def unique_dir(base: Path) -> Path:
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def save_run(run: Run, path, *, cache=None, force: bool = False, notify=None) -> Path:
    """Write a run folder: head/, metrics.json, report.md, history.png, confusion.png. The folder is built aside
    and renamed into place when whole (``_ownership.atomic_dir``): a crash leaves the old folder or none, never a run
    folder with a head but no metrics, or metrics but a half-written head."""

    path = Path(path)
    run.summary["path"] = str(path)
    with atomic_dir(path, "run", force=force, notify=notify) as tmp:
        run.head.save(tmp / HEAD_DIR, cache=cache)
        # The head's own record (sealed, with its model file's sha256) tied to this run's metrics: a head swapped
        # in from another run is refused too.
        head_json = f"{HEAD_DIR}/{HEAD_FILE}"
        run.summary[FILES] = {head_json: file_hash(tmp / head_json)}
        write_reports(run, f"{run.summary['head']} on {run.summary['cache']['name']}", folder=tmp)
    run.path = path
    return path


def write_reports(run: Run, title: str, folder=None) -> None:
    """metrics.json, report.md, history.png and confusion.png of a run (every kind) into ``folder`` (default: the
    run's ``path``)."""

    path = Path(folder) if folder is not None else run.path
    write_metrics(path, run.summary)
    write_text_atomic(path / "report.md", render_report(run.summary))
    plot_history(run.head.history_, path / "history.png", title=title)
    metrics = run.summary["metrics"]
    if metrics:
        split = "test" if "test" in metrics else next(iter(metrics))
        m = metrics[split]
        plot_confusion(m["confusion"], m["labels"], path / "confusion.png", title=f"{title} ({split})")


def write_metrics(path, summary: dict) -> None:
    """``path/metrics.json``: the run's summary, sealed (``seal``: the checksum of the rest), so that ``load_run``
    refuses one edited or damaged since (its class names name every prediction)."""
    record = json_plain(summary)
    record["seal"] = seal_of(record)
    write_json_atomic(Path(path) / METRICS_FILE, record, indent=2)


def load_run(path) -> Run:
    """A run folder written by ``fit_head`` (its head scores cached features) or ``fine_tune`` (its head is a
    ``WholeModel`` that scores images); HeadError when it is not one, or when its metrics.json or the files it
    lists were edited or damaged since the run was written (one line naming the file and the fix)."""

    path = Path(path)
    metrics = path / METRICS_FILE
    summary = read_json(
        metrics,
        HeadError,
        missing=f"{path} is not a fit-head run folder (no {METRICS_FILE}); pass the folder `bottleneck fit-head` "
        "printed.",
        redo="fit the head again.",
    )
    if not isinstance(summary, dict):
        raise HeadError(
            f"{metrics} holds a JSON {type(summary).__name__}, not a run's metrics; fit the head again."
        )
    tuned = summary.get("kind") == "fine-tune"
    redo = "fine-tune the run again" if tuned else "fit the head again"
    # Run folders written before metrics.json was sealed have neither a seal nor file digests: they are accepted
    # as they are (their head is still checked as it loads). One with digests but no seal was edited.
    if ("seal" in summary or FILES in summary) and summary.pop("seal", None) != seal_of(summary):
        raise HeadError(
            f"{metrics} was edited or damaged after the run was written (its seal does not match its content), so "
            f"its class names and settings cannot be trusted; {redo}."
        )
    for name, want in (summary.get(FILES) or {}).items():
        problem = file_problem(path / name, want, METRICS_FILE) if _inside(name) else "is no file of a run"
        if problem:
            raise HeadError(f"{path / name} {problem}; {redo}.")
    if tuned:
        return Run(path, WholeModel.load(path, summary), summary)
    head = load_head(path / HEAD_DIR)
    trained = (getattr(head, "trained_on_", None) or {}).get("class_names")
    names = (summary.get("cache") or {}).get("class_names")
    if trained is not None and names is not None and list(trained) != list(names):
        raise HeadError(
            f"{metrics} names the classes {list(names)[:10]} but its head was trained on {list(trained)[:10]}: the "
            f"files do not belong together; {redo}."
        )
    return Run(path, head, summary)


def _inside(name) -> bool:
    """Whether ``name`` (a path listed in a checked metrics.json) lies inside the run folder."""
    if not isinstance(name, str) or not name:
        return False
    return not Path(name).is_absolute() and ".." not in Path(name).parts
