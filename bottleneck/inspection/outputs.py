"""An inspection's files: summary.json, the CSVs of every list (ids to act on) and the offline page with
thumbnails, all made from its ``Findings``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck.inspection.duplicates import Pairs
from bottleneck.inspection.findings import Findings
from bottleneck.report.page import render_page
from bottleneck.report.sections import ISSUES_SHOWN, issues_section, map_section, pair_needs, pairs_section
from bottleneck.report.tables import csv_text
from bottleneck.report.thumbnails import row_thumbnails

SUMMARY = "summary.json"
PAGE = "index.html"
THUMBS = "thumbs"


def _split_pairs(rows, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    return rows.split[pairs.a], rows.split[pairs.b]


LABEL_RULES = {
    "estimate": "the rows least likely under their own label (out-of-fold logistic regression), as many as the "
    "estimated number of wrong labels (mixture proportions per pair of classes)",
    "cleanlab": "cleanlab find_label_issues on out-of-fold logistic regression",
}


def summary_of(cache, found: Findings, *, run, threshold: float, folds: int, label_method: str) -> dict:
    rows, exact, near, issues, predictions = (
        found.rows,
        found.exact,
        found.near,
        found.issues,
        found.predictions,
    )
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
        else {
            "split": found.split,
            "source": predictions.source,
            "metrics": predictions.metrics[found.split],
        },
        "map": {"method": found.method, "points": len(found.picked)},
        "near_duplicates": found.near_rule,
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


def write_csvs(folder: Path, found: Findings) -> dict:
    rows, exact, near, issues, predictions = (
        found.rows,
        found.exact,
        found.near,
        found.issues,
        found.predictions,
    )
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
            for r, (x, y) in zip(found.picked, found.xy, strict=True)
        ],
    )
    return files


def write_page(folder, cache, found: Findings, summary: dict, *, source, progress) -> None:
    rows, exact, near, issues, predictions = (
        found.rows,
        found.exact,
        found.near,
        found.issues,
        found.predictions,
    )
    picked = found.picked
    cross, cross_exact = found.cross_split(near), found.cross_split(exact)
    leaks = Pairs(
        *(np.concatenate([getattr(cross_exact, f), getattr(cross, f)]) for f in ("a", "b", "score"))
    )
    lists = [("leaks", "Cross-split leaks", leaks), ("exact", "Exact duplicates", exact),
             ("near", "Near duplicates", near)]  # fmt: skip
    needs = [pair_needs(p) for _, _, p in lists]
    if issues is not None:
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
            found.xy,
            found.flags()[picked],
            found.method,
            f"{len(picked)} of {len(rows)} images"
            + (" (a per-class sample; suspected label errors always in)" if len(picked) < len(rows) else ""),
        ),  # fmt: skip
        "files": [(f"{name}.csv", path) for name, path in summary["files"].items()]
        + [("summary.json", SUMMARY)],
    }
    (folder / PAGE).write_text(render_page(data), encoding="utf-8")


def _rule_fact(rule: dict) -> str:
    # Summaries written before the bounded scan have no "scan": theirs was exact.
    scan = "" if rule.get("scan", "exact") == "exact" else f"; scan {rule['scan']}"
    if rule["rule"] == "pixels":
        return (
            f"pixels compared ({rule['candidate_pairs']} candidate pairs of {rule['images_compared']} images, "
            f"the {rule['neighbours']} nearest of each{scan})"
        )
    return f"features alone, cosine >= {rule['threshold']} ({rule['why']}{scan})"


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
