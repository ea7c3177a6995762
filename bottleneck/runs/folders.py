"""Run folders: a fitted head and its metrics.json, report.md and plots, saved and loaded back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bottleneck._io import atomic_dir, read_json, write_json_atomic, write_text_atomic
from bottleneck.errors import HeadError

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
    from bottleneck.cache.reader import open_cache

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
    and renamed into place when whole (``_io.atomic_dir``): a crash leaves the old folder or none, never a run
    folder with a head but no metrics, or metrics but a half-written head."""
    path = Path(path)
    run.summary["path"] = str(path)
    with atomic_dir(path, "run", force=force, notify=notify) as tmp:
        run.head.save(tmp / HEAD_DIR, cache=cache)
        write_reports(run, f"{run.summary['head']} on {run.summary['cache']['name']}", folder=tmp)
    run.path = path
    return path


def write_reports(run: Run, title: str, folder=None) -> None:
    """metrics.json, report.md, history.png and confusion.png of a run (every kind) into ``folder`` (default: the
    run's ``path``)."""
    from bottleneck.report import plot_confusion, plot_history, render_report

    path = Path(folder) if folder is not None else run.path
    write_json_atomic(path / METRICS_FILE, run.summary, indent=2)
    write_text_atomic(path / "report.md", render_report(run.summary))
    plot_history(run.head.history_, path / "history.png", title=title)
    metrics = run.summary["metrics"]
    if metrics:
        split = "test" if "test" in metrics else next(iter(metrics))
        m = metrics[split]
        plot_confusion(m["confusion"], m["labels"], path / "confusion.png", title=f"{title} ({split})")


def load_run(path) -> Run:
    """A run folder written by ``fit_head`` (its head scores cached features) or ``fine_tune`` (its head is a
    ``WholeModel`` that scores images); HeadError when it is not one."""
    from bottleneck.heads import load_head

    path = Path(path)
    summary = read_json(
        path / METRICS_FILE,
        HeadError,
        missing=f"{path} is not a fit-head run folder (no {METRICS_FILE}); pass the folder `bottleneck fit-head` "
        "printed.",
        redo="fit the head again.",
    )
    if summary.get("kind") == "fine-tune":
        from bottleneck.runs.whole import WholeModel

        return Run(path, WholeModel.load(path, summary), summary)
    return Run(path, load_head(path / HEAD_DIR), summary)
