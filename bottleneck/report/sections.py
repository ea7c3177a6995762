"""The sections of a page built from arrays: predictions (metrics, confusion cells, worst mistakes), pairs of
images, suspected label errors and the map. Each says which rows it shows (``needs``), so thumbnails are made
for those rows only, then renders with the thumbnail names (``section(rows, thumbs)``).

``rows`` is a ``bottleneck.inspection.rows.Rows`` (global row numbers across splits); ``thumbs`` maps a global
row to its thumbnail file name (rows without one show "no image").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bottleneck.report.metrics import classification_metrics

CELL_LIMIT = 500  # images listed per confusion cell (the least confident first); counts stay exact
MISTAKES_SHOWN = 100
PAIRS_SHOWN = 200
ISSUES_SHOWN = 200


def item(rows, r: int, thumbs: dict, lines=()) -> dict:
    r = int(r)
    return {"thumb": thumbs.get(r), "id": str(rows.id[r]), "lines": [str(x) for x in lines]}


@dataclass
class Predictions:
    """Predicted probabilities ``proba`` (n, K) of the labels ``classes`` for the global rows ``sel`` of
    ``split``; ``source`` says where they come from (a run's head, out-of-fold models)."""

    rows: object
    split: str
    sel: np.ndarray
    proba: np.ndarray
    classes: np.ndarray
    source: str
    metrics: dict | None = None  # {split: classification_metrics}; computed for ``split`` when None

    def __post_init__(self):

        y = self.rows.label[self.sel]
        self.classes = np.asarray(self.classes, np.int64)
        m = classification_metrics(y, self.proba, classes=self.classes, class_names=self.rows.class_names)
        self.metrics = {**(self.metrics or {}), self.split: m}
        self.axis = np.union1d(self.classes, np.unique(y))  # the confusion matrix's label order
        self.pred = self.classes[np.argmax(self.proba, axis=1)]
        col = {int(c): j for j, c in enumerate(self.classes)}
        js = np.array([col.get(int(v), -1) for v in y])
        self.p_true = np.where(js >= 0, self.proba[np.arange(len(y)), np.maximum(js, 0)], 0.0)
        self.p_pred = self.proba.max(axis=1)
        self.t_idx = np.searchsorted(self.axis, y)
        self.p_idx = np.searchsorted(self.axis, self.pred)
        self.wrong = self.pred != y
        self._cells = {}
        for t, p in set(zip(self.t_idx.tolist(), self.p_idx.tolist(), strict=True)):
            members = np.flatnonzero((self.t_idx == t) & (self.p_idx == p))
            self._cells[(t, p)] = members[np.argsort(self.p_true[members], kind="stable")]
        wrong = np.flatnonzero(self.wrong)
        self.mistakes = wrong[np.argsort(self.p_true[wrong], kind="stable")]

    @property
    def needs(self) -> np.ndarray:
        shown = [m[:CELL_LIMIT] for m in self._cells.values()] + [self.mistakes[:MISTAKES_SHOWN]]
        return self.sel[np.unique(np.concatenate(shown))] if shown else np.zeros(0, np.int64)

    def section(self, thumbs: dict) -> dict:
        rows, names = self.rows, self.metrics[self.split]["labels"]
        cells = {
            f"{t},{p}": {
                "total": int(len(m)),
                "items": [
                    [thumbs.get(int(self.sel[i])), str(rows.id[self.sel[i]]), round(float(self.p_pred[i]), 4)]
                    for i in m[:CELL_LIMIT]
                ],
            }
            for (t, p), m in self._cells.items()
        }
        mistakes = [
            item(
                rows,
                self.sel[i],
                thumbs,
                [f"true {names[self.t_idx[i]]}", f"predicted {names[self.p_idx[i]]} {self.p_pred[i]:.3f}"],
            )
            for i in self.mistakes[:MISTAKES_SHOWN]
        ]
        return {
            "split": self.split,
            "source": self.source,
            "metrics": self.metrics,
            "labels": names,
            "confusion": self.metrics[self.split]["confusion"],
            "cells": cells,
            "mistakes": {
                "items": mistakes,
                "total": int(len(self.mistakes)),
                "note": "Most confident mistakes first (lowest probability of the true class).",
            },
        }

    def mistake_rows(self) -> np.ndarray:
        """Global rows of the mistakes, worst first."""
        return self.sel[self.mistakes]


def pairs_section(rows, pairs, thumbs: dict, note: str, shown: int = PAIRS_SHOWN) -> dict:
    """A list of image pairs side by side (``pairs``: a ``Pairs`` of global rows, highest score first)."""
    order = np.argsort(-pairs.score, kind="stable")[:shown]

    def side(r):
        return item(rows, r, thumbs, [rows.split_name(r), rows.class_name(rows.label[r])])

    return {
        "items": [
            {"a": side(pairs.a[k]), "b": side(pairs.b[k]), "score": float(pairs.score[k])} for k in order
        ],
        "total": len(pairs),
        "note": note,
    }


def pair_needs(pairs, shown: int = PAIRS_SHOWN) -> np.ndarray:
    order = np.argsort(-pairs.score, kind="stable")[:shown]
    return np.concatenate([pairs.a[order], pairs.b[order]])


def issues_section(rows, issues, thumbs: dict, note: str, shown: int = ISSUES_SHOWN) -> dict:
    """Suspected label errors (``issues``: ``LabelIssues``, most suspicious first) with the suggested label."""
    items = [
        item(
            rows,
            r,
            thumbs,
            [
                rows.split_name(r),
                f"label {rows.class_name(rows.label[r])} ({s:.3f})",
                f"suggested {rows.class_name(g)}",
            ],
        )
        for r, g, s in zip(issues.rows[:shown], issues.suggested[:shown], issues.score[:shown], strict=True)
    ]
    return {"items": items, "total": len(issues), "note": note}


def map_section(rows, picked: np.ndarray, xy: np.ndarray, flags: np.ndarray, method: str, note: str) -> dict:
    """The map's points: ``picked`` global rows at ``xy`` (M, 2) in [0, 1]; ``flags`` bit 1 mistake, 2 label
    error."""
    return {
        "method": method,
        "note": note,
        "classes": list(rows.class_names),
        "points": {
            "x": [round(float(v), 4) for v in xy[:, 0]],
            "y": [round(float(v), 4) for v in xy[:, 1]],
            "c": rows.label[picked].astype(int).tolist(),
            "f": np.asarray(flags, int).tolist(),
            "id": [str(i) for i in rows.id[picked]],
        },
    }
