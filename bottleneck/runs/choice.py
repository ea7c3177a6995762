"""The choice among scored configurations: the one-standard-error rule (the cheapest configuration within one
standard error of the lowest val log loss), the standard error of two rows' difference, and the classic table's
cell (much or little data, similar to ImageNet or not) read from the same rows."""

from __future__ import annotations

import numpy as np

from bottleneck.runs.layer_sets import paired_se

# Train images per class from which a dataset counts as "much data" (enough to fine-tune more than the top).
MUCH_DATA_PER_CLASS = 1000
# Similar to ImageNet or not is decided with the choice rule's own noise criterion: the data is "different" when
# the top layer's val log loss is more than one standard error above the best configuration's (earlier layers,
# or the raw pixels, measurably beat the most ImageNet-specific features). A noise criterion, not a fixed margin of
# accuracy: fixed margins call Fashion-MNIST "similar" although its multi-layer sets beat the top layer by 1.2-1.7
# points of test accuracy (README, "Which strategy?"; CHANGELOG.md).

# What a configuration costs, cheapest first: no backbone, a frozen backbone, a fine-tuned one.
TIERS = {"pixels": 0, "fine-tune": 2}


def table_cell(rows: list[dict], train_per_class: int, se_of) -> dict:
    """The classic table's cell: much or little data (train images per class), similar or different (is the
    top layer within one standard error of the best configuration's val log loss)."""
    top = next(r for r in rows if r["kind"] == "top")
    best = min(rows, key=lambda r: r["val_loss"])
    gap, se = top["val_loss"] - best["val_loss"], se_of(top, best)
    different = gap > se
    if best is top:
        evidence = ["The top layer has the lowest val log loss of every configuration."]
    else:
        verdict = "more than" if different else "within"
        evidence = [
            f"The top layer's val log loss is {gap:+.4f} against the best configuration ({best['name']}), "
            f"{verdict} one standard error ({se:.4f})."
        ]
    singles = [r for r in rows if r["kind"] in ("block", "wide")]
    if singles:
        mid = max(singles, key=lambda r: r["val_accuracy"])
        evidence.append(
            f"The best earlier layer alone ({mid['name']}) scores {(mid['val_accuracy'] - top['val_accuracy']) * 100:+.1f} "
            "points of val accuracy against the top layer."
        )
    pixels = next((r for r in rows if r["kind"] == "pixels"), None)
    if pixels is not None:
        features = max(r["val_accuracy"] for r in rows if r["kind"] not in ("pixels", "fine-tune"))
        evidence.append(
            f"The best backbone features beat the raw pixels by {(features - pixels['val_accuracy']) * 100:+.1f} points."
        )
    data = "much" if train_per_class >= MUCH_DATA_PER_CLASS else "little"
    evidence.append(
        f"~{train_per_class} train images per class is {'at least' if data == 'much' else 'under'} "
        f"{MUCH_DATA_PER_CLASS}."
    )
    return {"data": data, "similarity": "different" if different else "similar", "evidence": evidence}


def cost(row: dict) -> tuple:
    """How much a configuration costs to run, for ordering: no backbone < frozen backbone < fine-tuned, then dims."""
    return (TIERS.get(row["kind"], 1), row["dims"])


def choose(rows: list[dict], se_of) -> tuple[dict, str]:
    """The one-standard-error rule: the configuration with the lowest val log loss, unless a cheaper one
    (``cost``) is within one standard error of it; then the cheapest such. ``se_of(a, b)`` is the standard error
    of the difference of two rows' val log losses. Returns (the chosen row, the reason in one line)."""
    best = min(rows, key=lambda r: (r["val_loss"], cost(r)))
    close = [r for r in rows if r["val_loss"] - best["val_loss"] <= se_of(r, best)]
    chosen = min(close, key=lambda r: (cost(r), r["val_loss"]))
    lead = f"lowest val log loss: {best['name']} ({best['val_loss']:.4f})"
    if chosen is best:
        others = [r for r in rows if r is not best and _same(r) != _same(best)]  # not the same set again
        runner = min(others, key=lambda r: r["val_loss"], default=None)
        if runner is None:
            return chosen, f"{lead}, the only configuration scored."
        return chosen, (
            f"{lead}; no cheaper configuration is within one standard error of it (the next, {runner['name']}, "
            f"is {runner['val_loss'] - best['val_loss']:+.4f}, standard error {se_of(runner, best):.4f})."
        )
    why = "no backbone" if chosen["kind"] == "pixels" else f"{chosen['dims']} dims against {best['dims']}"
    return chosen, (
        f"{lead}; {chosen['name']} is within one standard error of it ({chosen['val_loss'] - best['val_loss']:+.4f}, "
        f"standard error {se_of(chosen, best):.4f}) and cheaper ({why}), so it is chosen."
    )


def _same(row: dict) -> tuple:
    """What makes two rows the same configuration (the greedy set may be a single layer scored already)."""
    return (TIERS.get(row["kind"], 1), tuple(row.get("layers") or (row["name"],)))


def se_function(cache, pixels, losses):
    """se_of(a, b): the paired standard error of two rows' val loss difference when both were scored on the
    same val images (the pixels cache has the pilot's rows), else the two standard errors combined."""
    same = pixels is None or (
        "val" in cache.splits
        and "val" in pixels.splits
        and np.array_equal(np.asarray(cache.ids("val")), np.asarray(pixels.ids("val")))
    )

    def se_of(a: dict, b: dict) -> float:
        if a is b:
            return 0.0
        if same or (a["kind"] != "pixels") == (b["kind"] != "pixels"):
            return paired_se(losses(a), losses(b))
        return float(np.hypot(a["val_loss_se"], b["val_loss_se"]))

    return se_of
