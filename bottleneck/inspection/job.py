"""`inspect`: duplicates, cross-split leaks, label errors and the map of a cache, written as CSVs, a JSON summary
and one offline page. Composes the report stage (page, thumbnails) lazily, as jobs in ``runs/`` do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck.callbacks import Notify, Progress
from bottleneck.constraints import validate_params
from bottleneck.inspection.duplicates import DEFAULT_THRESHOLD, NEIGHBOURS, Pairs, exact_duplicates
from bottleneck.inspection.options import INSPECT
from bottleneck.inspection.rows import Rows

SUMMARY = "summary.json"
PAGE = "index.html"
THUMBS = "thumbs"


@dataclass
class Inspection:
    """An inspection's output folder ``path`` and its ``summary`` (the content of summary.json)."""

    path: Path
    summary: dict


def load_features(cache, rows: Rows, progress: Progress | None = None) -> np.ndarray:
    """Every row's features, flattened, L2-normalised, float32, (N, D) in global row order, read block by
    block (the store's own dtype is never held whole a second time)."""
    from bottleneck.heads.feature_blocks import iter_blocks
    from bottleneck.inspection.duplicates import normalized

    d = int(np.prod(cache.feature_shape))
    X = np.empty((len(rows), d), np.float32)
    for i, split in enumerate(rows.splits):
        start = int(rows.starts[i])
        for r, block in iter_blocks(cache.features(split)):
            X[start + r[0] : start + r[-1] + 1] = normalized(block)
            if progress:
                progress("features", start + int(r[-1]) + 1, len(rows))
    return X


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
    - a 2-D map (``map_method``: auto = UMAP where installed, else PCA);
    - CSVs of every list (ids to act on), ``summary.json`` and, with ``page``, ``index.html`` with thumbnails
      decoded from the cache's source (``source``: where its images are now, if they moved).
    """
    from bottleneck._io import atomic_dir, check_out, write_json_atomic
    from bottleneck.cache.reader import as_cache
    from bottleneck.errors import InspectError
    from bottleneck.inspection.duplicates import check_neighbours, check_threshold
    from bottleneck.inspection.embedding_map import METHODS

    check_threshold(threshold)
    check_neighbours(neighbours)
    validate_params({"folds": folds, "pixel_check": pixel_check, "label_errors": label_errors}, INSPECT)
    from bottleneck.inspection.label_errors import METHODS as LABEL_METHODS

    if label_method not in LABEL_METHODS:
        from bottleneck.errors import one_of

        raise one_of("label_method", label_method, LABEL_METHODS)
    if map_method not in METHODS:
        from bottleneck.errors import one_of

        raise one_of("map_method", map_method, METHODS)
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
    t0 = time.perf_counter()
    seconds = {}

    def timed(name, t):
        seconds[name] = round(time.perf_counter() - t, 2)
        return time.perf_counter()

    X = load_features(cache, rows, progress)
    t = timed("features", t0)
    exact = exact_duplicates(rows.hash) if rows.hash is not None else Pairs.empty()
    from bottleneck.inspection.pixels import near_duplicates_by_pixels

    near, near_rule = near_duplicates_by_pixels(
        X, rows, exact, threshold=threshold, neighbours=neighbours, pixel_check=pixel_check, source=source,
        source_options=cache.meta.get("source_options"), resize=cache.config.resize, progress=progress,
    )  # fmt: skip
    if near_rule["rule"] == "features" and pixel_check and notify:
        notify(f"near duplicates by the features alone (cosine >= {threshold}): {near_rule['why']}.")
    t = timed("duplicates", t)

    issues, oof = None, None
    if label_errors:
        from bottleneck.inspection.label_errors import cleanlab_filter, find_label_issues, out_of_fold_proba

        if label_method == "cleanlab":
            cleanlab_filter()  # the missing extra is one line before minutes of fitting
        oof = out_of_fold_proba(X, rows.label, folds=folds, seed=seed, progress=progress)
        issues = find_label_issues(rows.label, oof, label_method)
        t = timed("label_errors", t)

    predictions = _predictions(rows, split, run, cache, oof, folds)
    t = timed("predictions", t)

    from bottleneck.inspection.embedding_map import MAX_POINTS, embed_2d, sample_rows

    picked = sample_rows(rows.label, MAX_POINTS, seed, keep=None if issues is None else issues.rows)
    xy, method = embed_2d(X[picked], map_method, seed)
    del X
    flags = np.zeros(len(rows), np.int64)
    if predictions is not None:
        flags[predictions.mistake_rows()] |= 1
    if issues is not None:
        flags[issues.rows] |= 2
    t = timed("map", t)

    summary = _summary(cache, rows, run, split, threshold, exact, near, issues, predictions, folds, method,
                       len(picked), label_method)  # fmt: skip
    summary["near_duplicates"] = near_rule
    with atomic_dir(out, "inspection", force=force, notify=notify) as tmp:
        files = _write_csvs(tmp, rows, exact, near, issues, predictions, picked, xy)
        summary["files"] = files
        if page:
            if rows.manifest is None and notify:
                notify(f"cache {cache.path.name} records no source images: the page has no thumbnails.")
            _write_page(tmp, cache, rows, summary, exact, near, issues, predictions, picked, xy, flags[picked],
                        method, source, progress)  # fmt: skip
            t = timed("page", t)
        seconds["total"] = round(time.perf_counter() - t0, 2)
        summary["seconds"] = seconds
        write_json_atomic(tmp / SUMMARY, summary, indent=2)
    summary["path"] = str(out)
    return Inspection(out, summary)


def _predictions(rows, split, run, cache, oof, folds):
    from bottleneck.report.sections import Predictions

    sel = rows.of(split)
    if run is not None:
        from bottleneck.runs.fit import run_proba
        from bottleneck.runs.folders import Run, load_run

        run = run if isinstance(run, Run) else load_run(run)
        proba, classes, _ = run_proba(run, cache, split)
        return Predictions(rows, split, sel, proba, classes, f"{run.head.name} head of run {run.path}")
    if oof is None:
        return None
    return Predictions(
        rows, split, sel, oof[sel], np.arange(oof.shape[1]),
        f"out-of-fold logistic regression ({folds} folds over all rows: no row is scored by a model that saw it)",
    )  # fmt: skip


def _split_pairs(rows, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    return rows.split[pairs.a], rows.split[pairs.b]


LABEL_RULES = {
    "estimate": "the rows least likely under their own label (out-of-fold logistic regression), as many as the "
    "estimated number of wrong labels (mixture proportions per pair of classes)",
    "cleanlab": "cleanlab find_label_issues on out-of-fold logistic regression",
}


def _summary(
    cache, rows, run, split, threshold, exact, near, issues, predictions, folds, method, points, label_method
) -> dict:
    leaks, within = {}, {}
    for kind, pairs in (("exact", exact), ("near", near)):
        sa, sb = _split_pairs(rows, pairs)
        for i, a in enumerate(rows.splits):
            within.setdefault(a, {"exact": 0, "near": 0})[kind] = int(np.sum((sa == i) & (sb == i)))
            for j in range(i + 1, len(rows.splits)):
                name = f"{a}-{rows.splits[j]}"
                n = int(np.sum(((sa == i) & (sb == j)) | ((sa == j) & (sb == i))))
                leaks.setdefault(name, {"exact": 0, "near": 0})[kind] = n
    counts = {
        "images": len(rows),
        "exact_duplicate_pairs": len(exact),
        "near_duplicate_pairs": len(near),
        "leak_pairs": sum(v["exact"] + v["near"] for v in leaks.values()),
    }
    if issues is not None:
        counts["label_issues"] = len(issues)
    if predictions is not None:
        counts["mistakes"] = int(predictions.wrong.sum())
    cfg = cache.config
    return {
        "cache": str(cache.path),
        "cache_name": cache.name,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "layer": cfg.layer,
        "feature_dim": int(np.prod(cache.feature_shape)),
        "splits": {s: int(len(rows.of(s))) for s in rows.splits},
        "class_names": list(rows.class_names),
        "run": None if run is None else str(getattr(run, "path", run)),
        "threshold": float(threshold),
        "counts": counts,
        "leaks": leaks,
        "within_split": within,
        "label_errors": None
        if issues is None
        else {"method": LABEL_RULES[label_method], "label_method": label_method, "folds": folds},
        "predictions": None
        if predictions is None
        else {"split": split, "source": predictions.source, "metrics": predictions.metrics[split]},
        "map": {"method": method, "points": int(points)},
    }


PAIR_COLUMNS = ["id", "split", "label", "partner_id", "partner_split", "partner_label", "score", "pixel_rms",
                "kind"]  # fmt: skip


def _pair_rows(rows, pairs: Pairs, kind: str) -> list[list]:
    # ``id`` is the later row of each pair (the copy to drop): dropping every id keeps one image of each group.
    pixel = [""] * len(pairs) if pairs.pixel is None else [round(float(p), 5) for p in pairs.pixel]
    return [
        [rows.id[b], rows.split_name(b), rows.class_name(rows.label[b]),
         rows.id[a], rows.split_name(a), rows.class_name(rows.label[a]), round(float(s), 5), p, kind]
        for a, b, s, p in zip(pairs.a.tolist(), pairs.b.tolist(), pairs.score.tolist(), pixel, strict=True)
    ]  # fmt: skip


def _write_csvs(folder: Path, rows, exact, near, issues, predictions, picked, xy) -> dict:
    from bottleneck.report.tables import csv_text

    files = {}

    def write(name, headers, table):
        (folder / name).write_text(csv_text(headers, table))
        files[name.removesuffix(".csv")] = name

    write("exact_duplicates.csv", PAIR_COLUMNS, _pair_rows(rows, exact, "exact"))
    write("near_duplicates.csv", PAIR_COLUMNS, _pair_rows(rows, near, "near"))
    leaks = [
        r for kind, p in (("exact", exact), ("near", near))
        for r in _pair_rows(rows, p.take(rows.split[p.a] != rows.split[p.b]), kind)
    ]  # fmt: skip
    write("leaks.csv", PAIR_COLUMNS, leaks)
    if issues is not None:
        write(
            "label_errors.csv",
            ["id", "split", "label", "suggested_label", "score"],
            [
                [
                    rows.id[r],
                    rows.split_name(r),
                    rows.class_name(rows.label[r]),
                    rows.class_name(g),
                    round(float(s), 5),
                ]
                for r, g, s in zip(issues.rows, issues.suggested, issues.score, strict=True)
            ],
        )
    if predictions is not None:
        p = predictions
        write(
            "mistakes.csv",
            ["id", "split", "label", "predicted_label", "score"],
            [
                [
                    rows.id[p.sel[i]],
                    p.split,
                    rows.class_name(rows.label[p.sel[i]]),
                    rows.class_name(p.pred[i]),
                    round(float(p.p_pred[i]), 5),
                ]
                for i in p.mistakes
            ],  # fmt: skip
        )
    write(
        "map.csv",
        ["id", "split", "label", "x", "y"],
        [
            [
                rows.id[r],
                rows.split_name(r),
                rows.class_name(rows.label[r]),
                round(float(x), 5),
                round(float(y), 5),
            ]
            for r, (x, y) in zip(picked, xy, strict=True)
        ],
    )
    return files


def _write_page(folder, cache, rows, summary, exact, near, issues, predictions, picked, xy, flags, method,
                source, progress):  # fmt: skip
    from bottleneck.report.page import render_page
    from bottleneck.report.sections import issues_section, map_section, pair_needs, pairs_section
    from bottleneck.report.thumbnails import row_thumbnails

    cross = near.take(rows.split[near.a] != rows.split[near.b])
    cross_exact = exact.take(rows.split[exact.a] != rows.split[exact.b])
    leaks = Pairs(
        *(np.concatenate([getattr(cross_exact, f), getattr(cross, f)]) for f in ("a", "b", "score"))
    )
    lists = [("leaks", "Cross-split leaks", leaks), ("exact", "Exact duplicates", exact),
             ("near", "Near duplicates", near)]  # fmt: skip
    needs = [pair_needs(p) for _, _, p in lists]
    if issues is not None:
        from bottleneck.report.sections import ISSUES_SHOWN

        needs.append(issues.rows[:ISSUES_SHOWN])
    if predictions is not None:
        needs.append(predictions.needs)
    thumbs = row_thumbnails(
        rows, np.concatenate(needs), folder / THUMBS, source=source,
        source_options=cache.meta.get("source_options"), progress=progress,
    )  # fmt: skip
    rule = summary["near_duplicates"]
    if rule["rule"] == "pixels":
        near_rule = (
            f"among each image's {rule['neighbours']} nearest in the features, the pairs whose 8 x 8 grey copies "
            f"differ by at most {rule['max_pixel_rms']} grey levels (RMS)"
        )
    else:
        near_rule = f"cosine similarity of the features >= {rule['threshold']} ({rule['why']})"
    notes = {
        "leaks": "The same image (exact) or a near copy in two splits: a test score that counts them is inflated.",
        "exact": "Equal file content (content hash).",
        "near": f"Near copies: {near_rule}; exact copies left out. The number is the cosine of the features.",
    }
    counts = summary["counts"]
    labels = {
        "images": "images",
        "exact_duplicate_pairs": "exact duplicate pairs",
        "near_duplicate_pairs": "near duplicate pairs",
        "leak_pairs": "cross-split pairs (leaks)",
        "label_issues": "suspected label errors",
        "mistakes": f"mistakes ({summary['predictions']['split']})"
        if summary.get("predictions")
        else "mistakes",
    }
    data = {
        "title": f"Inspection of {cache.name}",
        "subtitle": "Duplicates, cross-split leaks, likely label errors and a map, from the cached features.",
        "facts": _facts(cache, rows, summary),
        "counts": [(k, labels[k], v) for k, v in counts.items()],
        "leaks": [(name, v["exact"], v["near"]) for name, v in summary["leaks"].items()]
        + [(f"within {name}", v["exact"], v["near"]) for name, v in summary["within_split"].items()],
        "predictions": None if predictions is None else predictions.section(thumbs),
        "pairs": [(key, title, pairs_section(rows, p, thumbs, notes[key])) for key, title, p in lists],
        "label_errors": None
        if issues is None
        else issues_section(
            rows,
            issues,
            thumbs,
            f"Selected by {summary['label_errors']['method']}; least likely first; the number is the "
            "probability of the recorded label, the suggestion the likeliest other label.",
        ),  # fmt: skip
        "map": map_section(
            rows,
            picked,
            xy,
            flags,
            method,
            f"{len(picked)} of {len(rows)} images"
            + (" (a per-class sample; suspected label errors always in)" if len(picked) < len(rows) else ""),
        ),  # fmt: skip
        "files": [(f"{name}.csv", path) for name, path in summary["files"].items()]
        + [("summary.json", SUMMARY)],
    }
    (folder / PAGE).write_text(render_page(data), encoding="utf-8")


def _rule_fact(rule: dict) -> str:
    if rule["rule"] == "pixels":
        return (
            f"pixels compared ({rule['candidate_pairs']} candidate pairs of {rule['images_compared']} images, "
            f"the {rule['neighbours']} nearest of each)"
        )
    return f"features alone, cosine >= {rule['threshold']} ({rule['why']})"


def _facts(cache, rows, summary) -> list:
    cfg = cache.config
    feats = f"{cfg.backbone}" + (f" at {cfg.image_size} px" if cfg.image_size else "")
    facts = [
        ("cache", str(cache.path)),
        ("features", f"{feats}, {summary['feature_dim']}-d"),
        ("rows", ", ".join(f"{s} {n}" for s, n in summary["splits"].items())),
        ("near duplicates", _rule_fact(summary["near_duplicates"])),
    ]
    if summary.get("run"):
        facts.append(("run", summary["run"]))
    source = cache.meta.get("source")
    if source:
        facts.append(("source", source))
    return facts
