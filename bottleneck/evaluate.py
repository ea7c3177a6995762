"""Metrics, plots and reports of heads: numbers from scikit-learn, PNGs through matplotlib's Agg canvas."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bottleneck.errors import BottleneckError


def classification_metrics(
    y_true, proba, *, classes: Sequence[int] | None = None, class_names: Sequence[str] | None = None
) -> dict:
    """Accuracy, balanced accuracy, top-5 accuracy (more than 5 classes), log loss, per-class precision /
    recall / F1 / support and the confusion matrix, as a JSON-ready dict.

    ``y_true`` (N,) integer labels; ``proba`` (N, K) probabilities whose columns are the labels ``classes``
    (default 0..K-1); ``class_names[label]`` names a label (default its number). Labels of ``y_true`` that are
    not among ``classes`` count as errors (the head cannot predict them).
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise BottleneckError(
            f"proba has shape {p.shape} for {len(y)} labels; pass (N, n_classes) probabilities, one row per label."
        )
    if len(y) == 0:
        raise BottleneckError("no rows to evaluate; pass at least one labelled row.")
    classes = np.arange(p.shape[1]) if classes is None else np.asarray(classes, np.int64)
    if len(classes) != p.shape[1]:
        raise BottleneckError(
            f"{len(classes)} classes for {p.shape[1]} probability columns; they must match."
        )
    labels = np.union1d(classes, np.unique(y))
    if len(labels) > len(classes):  # labels the head never saw get zero-probability columns
        full = np.zeros((len(p), len(labels)))
        full[:, np.searchsorted(labels, classes)] = p
        p = full
    else:
        p = p[:, np.argsort(classes)]
    p = np.clip(p, 0.0, None)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    pred = labels[np.argmax(p, axis=1)]

    from sklearn import metrics as skm

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # e.g. "y_pred contains classes not in y_true": expected on small splits
        out = {
            "n": int(len(y)),
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        }
        if len(labels) > 5:
            out["top5_accuracy"] = float(skm.top_k_accuracy_score(y, p, k=5, labels=labels))
        out["log_loss"] = float(skm.log_loss(y, p, labels=labels))
        prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
        cm = skm.confusion_matrix(y, pred, labels=labels)
    names = [_name(int(label), class_names) for label in labels]
    out["per_class"] = {
        n: {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
        for n, a, b, c, d in zip(names, prec, rec, f1, support, strict=True)
    }
    out["labels"] = names
    out["confusion"] = cm.tolist()
    return out


def _name(label: int, class_names) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


# --- tables ------------------------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table with padded columns (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        any(_is_number(r[i]) for r in rows) and all(_is_number(r[i]) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]

    def line(r):
        return (
            "| "
            + " | ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), sep, *[line(r) for r in cells[1:]]]) + "\n"


def csv_text(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows([[("" if v is None else v) for v in r] for r in rows])
    return buf.getvalue()


def _is_number(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | np.floating):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """'0.9123 ± 0.0021' for several values, '0.9123' for one."""
    v = np.asarray(values, np.float64)
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def render_report(summary: dict) -> str:
    """The markdown report of a fit-head run from its metrics.json dict (see ``bottleneck.runs``)."""
    cache = summary.get("cache", {})
    lines = [f"# {summary['head']} head on {cache.get('name', '?')}", ""]
    cfg = cache.get("config") or {}
    facts = [
        ("cache", cache.get("path")),
        (
            "features",
            f"{cfg.get('backbone')} ({cfg.get('weights')} weights, pooling {cfg.get('pooling')}), "
            f"shape {tuple(cache.get('feature_shape', ()))}",
        ),
        ("rows", ", ".join(f"{k} {v}" for k, v in cache.get("splits", {}).items())),
        ("parameters", ", ".join(f"{k}={v}" for k, v in summary.get("params", {}).items())),
        ("fit time", f"{summary['fit_seconds']:.2f} s"),
    ]
    sel = summary.get("selection") or {}
    if sel:
        facts.append(("selection", ", ".join(f"{k} {v}" for k, v in sel.items())))
    lines += [f"- **{k}**: {v}" for k, v in facts if v not in (None, "")] + ["", "## Metrics", ""]
    metrics = summary["metrics"]
    top5 = any("top5_accuracy" in m for m in metrics.values())
    headers = [
        "split",
        "n",
        "accuracy",
        "balanced accuracy",
        *(["top-5 accuracy"] if top5 else []),
        "log loss",
    ]
    rows = [
        [
            s,
            m["n"],
            m["accuracy"],
            m["balanced_accuracy"],
            *([m.get("top5_accuracy")] if top5 else []),
            m["log_loss"],
        ]
        for s, m in metrics.items()
    ]
    lines.append(markdown_table(headers, rows))
    if metrics:
        split = "test" if "test" in metrics else next(iter(metrics))
        pc = metrics[split]["per_class"]
        lines += [f"## Per class ({split})", ""]
        lines.append(
            markdown_table(
                ["class", "precision", "recall", "f1", "support"],
                [[n, v["precision"], v["recall"], v["f1"], v["support"]] for n, v in pc.items()],
            )
        )
    notes = summary.get("notes") or []
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += [
        "## Plots",
        "",
        "![training history](history.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
    ]
    return "\n".join(lines)


# --- plots -------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    # A bare Figure renders through the Agg canvas chosen at savefig time: no pyplot, no global backend
    # switch, so the library never disturbs a user's interactive matplotlib session.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_history(history: dict, path, title: str = "") -> Path:
    """Loss and accuracy per epoch (Keras heads) or validation accuracy and loss against C (logreg) as a PNG."""
    path = Path(path)
    if "C" in history:
        fig = _figure(6, 3.6)
        ax = fig.add_subplot()
        ax.semilogx(history["C"], history["val_accuracy"], "o-", label="val accuracy")
        ax.set_xlabel("C (inverse regularisation)")
        ax.set_ylabel("val accuracy")
        best = history.get("best_C")
        if best is not None:
            ax.axvline(best, color="gray", ls="--", label=f"chosen C = {best:.3g}")
        ax2 = ax.twinx()
        ax2.semilogx(history["C"], history["val_loss"], "s:", color="tab:red", label="val loss")
        ax2.set_ylabel("val log loss")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="best", fontsize=8)
    else:
        fig = _figure(9, 3.6)
        epochs = np.arange(1, len(history.get("loss", [])) + 1)
        for i, (key, label) in enumerate((("loss", "loss"), ("accuracy", "accuracy"))):
            ax = fig.add_subplot(1, 2, i + 1)
            for k, style in ((key, "-"), (f"val_{key}", "--")):
                if k in history:
                    ax.plot(
                        epochs[: len(history[k])], history[k], style, marker=".", label=k.replace("_", " ")
                    )
            if history.get("best_epoch"):
                ax.axvline(
                    history["best_epoch"], color="gray", ls=":", label=f"best epoch {history['best_epoch']}"
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path)
    return path


def plot_confusion(confusion, labels: Sequence[str], path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class) with counts written in the cells up to 20 classes."""
    path = Path(path)
    cm = np.asarray(confusion, np.float64)
    k = len(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(14.0, 3.0 + 0.45 * k)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    if k <= 40:
        ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.savefig(path)
    return path


def plot_comparison(rows: Sequence[dict], path, metric: str = "accuracy") -> Path:
    """Grouped bars of ``metric`` (mean, with std error bars) per head, one group per cache."""
    path = Path(path)
    groups = list(dict.fromkeys(r["cache"] for r in rows))
    heads = list(dict.fromkeys(r["head"] for r in rows))
    fig = _figure(max(6.0, 1.2 + 0.5 * len(groups) * len(heads)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(heads))
    lo = 1.0
    for j, head in enumerate(heads):
        xs, ms, ss = [], [], []
        for i, g in enumerate(groups):
            r = next((r for r in rows if r["cache"] == g and r["head"] == head), None)
            if r is None or r.get(f"{metric}_mean") is None:
                continue
            xs.append(i + (j - (len(heads) - 1) / 2) * width)
            ms.append(r[f"{metric}_mean"])
            ss.append(r.get(f"{metric}_std") or 0.0)
        if xs:
            bars = ax.bar(xs, ms, width, yerr=ss if any(ss) else None, capsize=3, label=head)
            ax.bar_label(bars, labels=[f"{m:.3f}" for m in ms], fontsize=7, padding=2)
            lo = min(lo, min(ms))
    ax.set_xticks(range(len(groups)), groups, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(metric.replace("_", " "))
    # Start the axis a little below the worst bar: differences of a point matter here, and a 0 baseline hides them.
    ax.set_ylim(max(0.0, math.floor((lo - 0.05) * 20) / 20), 1.0)
    ax.legend(fontsize=8, ncols=min(5, len(heads)))
    fig.savefig(path)
    return path
