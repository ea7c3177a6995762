"""`inspect`: duplicates, cross-split leaks, label errors and the map of a cache, written as CSVs, a JSON summary
and one offline page. Steps: the inputs checked, the ``Findings`` made from the features, the summary, the files;
the report stage (page, thumbnails), earlier in the flow, renders the page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bottleneck._io import write_json_atomic
from bottleneck._ownership import atomic_dir, check_out
from bottleneck.cache.reader import as_cache
from bottleneck.callbacks import Notify, Progress
from bottleneck.constraints import validate_params
from bottleneck.errors import InspectError, one_of
from bottleneck.inspection.duplicates import (
    DEFAULT_THRESHOLD,
    NEIGHBOURS,
    check_neighbours,
    check_threshold,
)
from bottleneck.inspection.embedding_map import METHODS as MAP_METHODS
from bottleneck.inspection.findings import Timer, find
from bottleneck.inspection.label_errors import METHODS as LABEL_METHODS
from bottleneck.inspection.options import INSPECT
from bottleneck.inspection.outputs import SUMMARY, summary_of, write_csvs, write_page
from bottleneck.inspection.rows import Rows


@dataclass
class Inspection:
    """An inspection's output folder ``path`` and its ``summary`` (the content of summary.json)."""

    path: Path
    summary: dict


def inspect_cache(
    cache,
    *,
    run=None,
    split: str | None = None,
    out=None,
    source=None,
    threshold: float = DEFAULT_THRESHOLD,
    pixel_check: bool = True,
    neighbours: int = NEIGHBOURS,
    label_errors: bool = True,
    label_method: str = "estimate",
    folds: int = 5,
    map_method: str = "auto",
    page: bool = True,
    seed: int = 0,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> Inspection:
    """Inspect a cache from its features alone (no backbone pass) and write the results into ``out``
    (default ``runs/inspect-<cache>``; built in a hidden sibling and renamed when whole). A given ``out`` that
    bottleneck did not wholly write is refused before any work, unless ``force`` moves it aside.

    - exact duplicates (equal content hashes in the manifest) and near duplicates, within and across splits;
      cross-split pairs are leaks. Near duplicates: with ``pixel_check`` and the images readable, each image's
      ``neighbours`` nearest in the features (and every pair of cosine >= ``threshold``) compared pixel by pixel
      (``pixels.near_duplicates_by_pixels``); otherwise cosine >= ``threshold`` of the features alone;
    - with ``label_errors``: suspected label errors from out-of-fold probabilities of a ``folds``-fold logistic
      regression over all rows: the rows least likely under their own label, as many as
      ``label_errors.estimated_error_counts`` estimates (``label_method="estimate"``), or cleanlab's
      ``find_label_issues`` (``label_method="cleanlab"``, needs the ``inspect`` extra);
    - predictions on ``split`` (default test, else the last split): the saved ``run``'s head, or the
      out-of-fold models; their mistakes, metrics and confusion matrix;
    - a 2-D map (``map_method``: auto = t-SNE up to 1 000 points, above that UMAP where
      installed, else PCA);
    - CSVs of every list (ids to act on), ``summary.json`` and, with ``page``, ``index.html`` with thumbnails
      decoded from the cache's source (``source``: where its images are now, if they moved).
    """
    cache, rows, split, out = _checked(
        cache, split=split, out=out, source=source, threshold=threshold, neighbours=neighbours,
        folds=folds, pixel_check=pixel_check, label_errors=label_errors, label_method=label_method,
        map_method=map_method, force=force,
    )  # fmt: skip
    timer = Timer()
    found = find(
        cache, rows, split, run=run, source=source, threshold=threshold, neighbours=neighbours,
        pixel_check=pixel_check, label_errors=label_errors, label_method=label_method, folds=folds,
        map_method=map_method, seed=seed, timer=timer, progress=progress, notify=notify,
    )  # fmt: skip
    summary = summary_of(cache, found, run=run, threshold=threshold, folds=folds, label_method=label_method)
    with atomic_dir(out, "inspection", force=force, notify=notify) as tmp:
        summary["files"] = write_csvs(tmp, found)
        if page:
            if rows.manifest is None and notify:
                notify(f"cache {cache.path.name} records no source images: the page has no thumbnails.")
            write_page(tmp, cache, found, summary, source=source, progress=progress)
            timer.lap("page")
        summary["seconds"] = timer.total()
        write_json_atomic(tmp / SUMMARY, summary, indent=2)
    summary["path"] = str(out)
    return Inspection(out, summary)


def _checked(cache, *, split, out, source, threshold, neighbours, folds, pixel_check, label_errors,
             label_method, map_method, force):  # fmt: skip
    """Every option checked, and the output folder refused, before the cache is read: (cache, rows, the split
    predicted, the output folder)."""
    check_threshold(threshold)
    check_neighbours(neighbours)
    validate_params({"folds": folds, "pixel_check": pixel_check, "label_errors": label_errors}, INSPECT)
    if label_method not in LABEL_METHODS:
        raise one_of("label_method", label_method, LABEL_METHODS)
    if map_method not in MAP_METHODS:
        raise one_of("map_method", map_method, MAP_METHODS)
    cache = as_cache(cache)
    out = Path(out) if out is not None else Path("runs") / f"inspect-{cache.name}"
    check_out(out, force=force)  # before the scan, not after it
    rows = Rows(cache)
    if len(rows) == 0:
        raise InspectError(f"cache {cache.path.name} has no rows to inspect.")
    split = split or ("test" if "test" in rows.splits else rows.splits[-1])
    cache._check(split)
    if source is not None and not Path(source).exists():
        raise InspectError(
            f"source={source} does not exist; pass the folder or file where the images are now."
        )
    return cache, rows, split, out
