"""Which layers of a multi-layer cache to use: layer sets scored from one cache, and greedy forward selection.

Every score here comes from the columns of one cache already in RAM: a layer costs a head fit (about a second
for logreg on a pilot), not a backbone pass. Selection looks at train and val only; the test split is scored
after a choice is made, for the report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.errors import HeadError

# Greedy selection adds a layer while it lowers the val log loss by at least this fraction. Loss, not accuracy:
# on a pilot's few hundred val rows accuracy moves in steps of 1/n and its noise picked the wrong layers
# (Fashion-MNIST pilot: test 0.865 by accuracy vs 0.884 by loss, README).
MIN_GAIN = 0.01
MAX_LAYERS = 4


@dataclass
class _Splits:
    """Train / val (/ test) features of a cache in RAM, and the column range of each of its layers."""

    columns: dict  # layer -> (start, stop)
    order: list  # layer names in cache order (input to output)
    X: dict  # split -> (N, D) array
    y: dict  # split -> (N,) labels
    val_note: str | None = None

    def take(self, split: str, layers: Sequence[str]) -> np.ndarray:
        ranges = [self.columns[n] for n in self.order if n in set(layers)]
        if len(ranges) == 1:
            return self.X[split][:, ranges[0][0] : ranges[0][1]]
        return np.concatenate([self.X[split][:, a:b] for a, b in ranges], axis=1)


def _load(cache, seed: int, with_test: bool) -> _Splits:
    from bottleneck.cache.view import layer_columns
    from bottleneck.heads.checks import stratified_holdout

    columns = layer_columns(cache)
    if "train" not in cache.splits:
        raise HeadError(f"cache {cache.name} has no train split; layer selection fits heads on train.")
    X = {"train": np.asarray(cache.features("train")[:], np.float32)}
    y = {"train": np.asarray(cache.labels("train"))}
    note = None
    if "val" in cache.splits:
        X["val"], y["val"] = np.asarray(cache.features("val")[:], np.float32), np.asarray(cache.labels("val"))
    else:  # no val split: a stratified fifth of train stands in for it, and never trains
        keep, held = stratified_holdout(y["train"], 0.2, seed)
        X["val"], y["val"] = X["train"][held], y["train"][held]
        X["train"], y["train"] = X["train"][keep], y["train"][keep]
        note = f"no val split: {len(held)} train rows held out for selection"
    if with_test and "test" in cache.splits:
        X["test"], y["test"] = (
            np.asarray(cache.features("test")[:], np.float32),
            np.asarray(cache.labels("test")),
        )
    return _Splits({n: (a, b) for n, a, b in columns}, [n for n, _, _ in columns], X, y, note)


def _score(data: _Splits, layers: Sequence[str], head: str, params: dict, seed: int, test: bool) -> dict:
    from sklearn.metrics import log_loss

    from bottleneck.heads import make_head

    t0 = time.perf_counter()
    h = make_head(head, **(params | {"random_state": seed}))
    h.fit(data.take("train", layers), data.y["train"], X_val=data.take("val", layers), y_val=data.y["val"])
    seconds = time.perf_counter() - t0
    proba = h.predict_proba(data.take("val", layers))
    out = {
        "layers": [n for n in data.order if n in set(layers)],
        "dims": int(sum(data.columns[n][1] - data.columns[n][0] for n in layers)),
        "val_accuracy": float(np.mean(h.classes_[proba.argmax(1)] == data.y["val"])),
        "val_loss": float(log_loss(data.y["val"], proba, labels=h.classes_)),
        "fit_seconds": round(seconds, 3),
    }
    if test and "test" in data.X:
        pred = h.predict(data.take("test", layers))
        out["test_accuracy"] = float(np.mean(pred == data.y["test"]))
    return out


def score_layer_sets(
    cache,
    sets: Sequence[Sequence[str]],
    *,
    head: str = "logreg",
    params: dict | None = None,
    seed: int = 0,
    test: bool = True,
    progress: Progress | None = None,
) -> list[dict]:
    """Fit ``head`` on each set of layers of ``cache`` (names as in its column record); one dict per set:
    layers, dims, val_accuracy, val_loss, fit_seconds and (``test`` and a test split) test_accuracy."""
    data = _load(cache, seed, test)
    unknown = sorted({n for s in sets for n in s} - set(data.columns))
    if unknown:
        from bottleneck.cache.view import resolve_layers

        resolve_layers(cache, unknown)  # raises the did-you-mean error
    out = []
    for i, layers in enumerate(sets):
        out.append(_score(data, layers, head, dict(params or {}), seed, test))
        if progress:
            progress("layers", i + 1, len(sets))
    return out


@dataclass
class LayerSearch:
    """The result of ``greedy_layers``: each step's chosen layers and val scores, and the chosen set."""

    steps: list[dict]  # {"layers", "added", "dims", "val_accuracy", "val_loss", "fit_seconds"} per step
    layers: tuple[str, ...]  # the chosen set, in cache order
    head: str
    fits: int  # heads fitted in the search
    seconds: float
    notes: list[str] = field(default_factory=list)
    test_accuracy: float | None = None  # of the chosen set, scored after the search (None: no test split)

    def to_json(self) -> dict:
        return {
            "layers": list(self.layers),
            "head": self.head,
            "steps": self.steps,
            "fits": self.fits,
            "seconds": round(self.seconds, 3),
            "test_accuracy": self.test_accuracy,
            "notes": self.notes,
        }

    def markdown(self) -> str:
        from bottleneck.report import markdown_table

        rows = [
            [
                i + 1,
                s["added"],
                len(s["layers"]),
                s["dims"],
                f"{s['val_accuracy']:.4f}",
                f"{s['val_loss']:.4f}",
            ]
            for i, s in enumerate(self.steps)
        ]
        text = markdown_table(["step", "added", "layers", "dims", "val accuracy", "val loss"], rows)
        text += f"\nchosen: {','.join(self.layers)}"
        if self.test_accuracy is not None:
            text += f" (test accuracy {self.test_accuracy:.4f})"
        return text + "".join(f"\n{n}" for n in self.notes) + "\n"


def greedy_layers(
    cache,
    *,
    head: str = "logreg",
    max_layers: int = MAX_LAYERS,
    min_gain: float = MIN_GAIN,
    candidates: Sequence[str] | None = None,
    params: dict | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> LayerSearch:
    """Forward selection of layers on the val split: start empty, add the layer whose set gives the lowest val
    log loss, stop when the best addition lowers it by less than ``min_gain`` (a fraction) or ``max_layers``
    are chosen. ``candidates`` default to every layer of the cache. The test split is scored once, after."""
    if not isinstance(max_layers, int) or isinstance(max_layers, bool) or max_layers < 1:
        raise HeadError(f"max_layers={max_layers!r} must be a positive integer, e.g. 4.")
    if not 0 <= float(min_gain) < 1:
        raise HeadError(f"min_gain={min_gain!r} must be a fraction from 0 to 1, e.g. 0.01.")
    t0 = time.perf_counter()
    data = _load(cache, seed, with_test=True)
    pool = list(data.order if candidates is None else candidates)
    unknown = [n for n in pool if n not in data.columns]
    if unknown:
        from bottleneck.cache.view import resolve_layers

        resolve_layers(cache, unknown)
    params = dict(params or {})
    chosen: list[str] = []
    steps: list[dict] = []
    fits = 0
    total = sum(len(pool) - k for k in range(min(max_layers, len(pool))))
    while len(chosen) < min(max_layers, len(pool)):
        tried = []
        for name in (n for n in pool if n not in chosen):
            tried.append((name, _score(data, [*chosen, name], head, params, seed, test=False)))
            fits += 1
            if progress:
                progress("layer search", fits, total)
        name, best = min(tried, key=lambda t: (t[1]["val_loss"], -t[1]["val_accuracy"]))
        # A relative gain, with a floor: a near-zero loss improving by a hair is not a better layer set.
        if steps and best["val_loss"] > steps[-1]["val_loss"] - max(steps[-1]["val_loss"] * min_gain, 1e-3):
            break
        chosen.append(name)
        steps.append({"added": name, **best})
    if progress:
        progress("layer search", total, total)
    layers = tuple(n for n in data.order if n in set(chosen))
    notes = [data.val_note] if data.val_note else []
    test = None
    if "test" in data.X:
        test = _score(data, layers, head, params, seed, test=True)["test_accuracy"]
    return LayerSearch(steps, layers, head, fits, time.perf_counter() - t0, notes, test)
