"""PNG plots through matplotlib's Agg canvas: training history, confusion matrix, comparison bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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
                    x, y = epochs[: len(history[k])], list(history[k])
                    if f"start_{k}" in history:  # a fine-tuned run: epoch 0 is the model it started from
                        x, y = np.concatenate([[0], x]), [history[f"start_{k}"], *y]
                    ax.plot(x, y, style, marker=".", label=k.replace("_", " "))
            if history.get("best_epoch") or "start_val_loss" in history:
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


def plot_layers(rows: Sequence[dict], path, title: str = "") -> Path:
    """Val and test accuracy of each single layer by depth (``rows`` of ``advise``), the pixel baseline and the
    other configurations (greedy set, fine-tune) as horizontal lines."""
    path = Path(path)
    layers = [r for r in rows if r.get("depth") is not None]
    others = [r for r in rows if r.get("depth") is None]
    fig = _figure(max(6.0, 1.5 + 0.35 * len(layers)), 4.2)
    ax = fig.add_subplot()
    xs = [r["depth"] for r in layers]
    for key, style in (("val_accuracy", "o-"), ("test_accuracy", "s--")):
        ys = [r.get(key) for r in layers]
        if all(y is not None for y in ys):
            ax.plot(xs, ys, style, label=key.replace("_", " "), markersize=4)
    for i, r in enumerate(others):
        y = r.get("test_accuracy") if r.get("test_accuracy") is not None else r["val_accuracy"]
        ax.axhline(y, color=f"C{i + 2}", linestyle=":", label=f"{r['name']} ({y:.3f})")
    ax.set_xticks(xs, [r["layers"][0] for r in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("layer (input to output)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path)
    return path
