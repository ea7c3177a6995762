"""The page of a run (``fit-head``, ``evaluate``, ``compare`` with ``--report``): metrics, the per-class table,
a clickable confusion matrix and the worst mistakes, with thumbnails of the cache's images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck._ownership import atomic_dir, check_out
from bottleneck.cache.reader import as_cache
from bottleneck.errors import BottleneckError
from bottleneck.heads import HEADS, head_params
from bottleneck.inspection.rows import Rows
from bottleneck.report.page import render_page
from bottleneck.report.sections import Predictions
from bottleneck.report.thumbnails import row_thumbnails
from bottleneck.runs.fit import fit_head, run_proba
from bottleneck.runs.folders import Run, load_run

PAGE = "index.html"
THUMBS = "thumbs"


def write_run_page(
    run,
    cache,
    *,
    split: str = "test",
    out=None,
    source=None,
    comparison=None,
    progress=None,
    force=False,
    notify=None,
):
    """Write ``out`` (default ``<run folder>/report``) holding index.html and thumbs/ for a saved ``run``'s
    predictions on ``split`` of ``cache``; returns the path of index.html. ``source``: where the cache's
    images are now, if they moved. ``comparison`` ({"headers", "rows", "note"}) adds a table on top (compare).
    The folder is built aside and renamed when whole."""

    run = run if isinstance(run, Run) else load_run(run)
    if out is None:
        if run.path is None:
            raise BottleneckError("the run is not saved; pass out=FOLDER for its page.")
        out = Path(run.path) / "report"
    out = Path(out)
    check_out(out, force=force)  # before the thumbnails are read
    cache = as_cache(cache)
    cache._check(split)
    proba, classes, scored = run_proba(run, cache, split)
    rows = Rows(cache)
    head = f"{run.head.name} head" + (f" of run {run.path}" if run.path else "")
    pred = Predictions(rows, split, rows.of(split), proba, classes, head)
    with atomic_dir(out, "page", force=force, notify=notify) as tmp:
        thumbs = row_thumbnails(
            rows, pred.needs, tmp / THUMBS, source=source,
            source_options=cache.meta.get("source_options"), progress=progress,
        )  # fmt: skip
        m = pred.metrics[split]
        data = {
            "title": f"{run.head.name} on {scored.name} ({split})",
            "subtitle": "Metrics, confusion matrix and the worst mistakes, with the images.",
            "facts": [
                ("run", str(run.path) if run.path else "(not saved)"),
                ("cache", str(cache.path)),
                ("features", f"{cache.config.backbone}, {int(np.prod(scored.feature_shape))}-d"),
                ("rows", f"{split} {m['n']}"),
            ],
            "counts": [
                ("images", f"images ({split})", m["n"]),
                ("mistakes", f"mistakes ({split})", int(pred.wrong.sum())),
            ],
            "comparison": comparison,
            "predictions": pred.section(thumbs),
        }
        (tmp / PAGE).write_text(render_page(data), encoding="utf-8")
    return out / PAGE


def write_compare_page(
    comparison,
    caches,
    *,
    params: dict | None = None,
    out,
    source=None,
    progress=None,
    force=False,
    notify=None,
):
    """The page of a comparison (``out``/index.html): its table, then the predictions of its best row on a
    given cache (highest mean accuracy), that head fitted once more with the row's first seed."""

    caches = {c.name: c for c in (as_cache(c) for c in caches)}
    rows = [r for r in comparison.rows if r["cache"] in caches]
    if not rows:
        raise BottleneckError("the comparison has no row on the given caches to show on a page.")
    best = max(rows, key=lambda r: r["accuracy_mean"])
    cache, name = caches[best["cache"]], best["head"]
    params = dict(params or {})
    kw = {k: v for k, v in params.items() if k not in HEADS and k in head_params(name)} | params.get(name, {})
    seed = next(r["seed"] for r in comparison.records if r["cache"] == best["cache"] and r["head"] == name)
    run = fit_head(cache, name, params=kw, seed=seed, save=False)
    split = best["split"] if best["split"] in cache.splits else "train"
    headers = ["cache", "backbone", "head", "split", "accuracy", "balanced accuracy", "fit s", "seeds"]
    table = [
        [r["cache"], r["backbone"], r["head"], r["split"], r["accuracy_mean"], r["balanced_accuracy_mean"],
         round(r["fit_seconds_mean"], 2), r["n_seeds"]]
        for r in comparison.rows
    ]  # fmt: skip
    note = f"Below: the best row on a given cache, {name} on {cache.name}, fitted again with seed {seed}."
    return write_run_page(
        run, cache, split=split, out=out, source=source, progress=progress, force=force, notify=notify,
        comparison={"headers": headers, "rows": table, "note": note},
    )  # fmt: skip
