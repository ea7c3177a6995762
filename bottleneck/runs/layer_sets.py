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

from bottleneck._tf import cpu_count
from bottleneck.backbones.model_file import is_model_path
from bottleneck.backbones.presets import BLOCKS, MULTISCALE, MULTISCALE_NAME, NETWORK_SETS, WIDE, is_wide
from bottleneck.backbones.registry import get_spec
from bottleneck.cache.columns import layer_columns, resolve_layers, set_layers, top_layer
from bottleneck.callbacks import Progress
from bottleneck.config import layer_names
from bottleneck.errors import HeadError
from bottleneck.heads import head_params, make_head
from bottleneck.heads.checks import stratified_holdout
from bottleneck.report import markdown_table

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


class LayerScorer:
    """Heads fitted on layer sets of one cache read into RAM once, scored on val; test only when asked (after a
    choice). Each val score carries its standard errors over the val rows, and the per-row log losses stay here
    so two sets can be compared row by row (``paired_se``)."""

    def __init__(self, cache, *, head: str = "logreg", params: dict | None = None, seed: int = 0):
        self.data = _load(cache, seed, with_test=True)
        self.cache, self.head, self.params, self.seed = cache, head, dict(params or {}), seed
        self._heads: dict[tuple, object] = {}
        self._losses: dict[tuple, np.ndarray] = {}
        self._rows: dict[tuple, dict] = {}
        self.fits = 0

    @property
    def order(self) -> list[str]:
        return self.data.order

    def check(self, names) -> None:
        unknown = sorted(set(names) - set(self.data.columns))
        if unknown:
            resolve_layers(self.cache, unknown)  # raises the did-you-mean error

    def _key(self, layers: Sequence[str]) -> tuple[str, ...]:
        return tuple(n for n in self.data.order if n in set(layers))

    def _fit(self, key: tuple[str, ...], threaded: bool):
        """Fit one set (no shared state touched, so sets can be fitted in threads): (head, losses, row)."""

        data = self.data
        params = dict(self.params)
        if threaded and "blas_threads" in head_params(self.head):
            params.setdefault("blas_threads", None)  # the caller's one limit holds for every thread
        t0 = time.perf_counter()
        h = make_head(self.head, **(params | {"random_state": self.seed}))
        h.fit(data.take("train", key), data.y["train"], X_val=data.take("val", key), y_val=data.y["val"])
        seconds = time.perf_counter() - t0
        proba = h.predict_proba(data.take("val", key))
        right = h.classes_[proba.argmax(1)] == data.y["val"]
        losses = row_losses(proba, h.classes_, data.y["val"])
        n = len(right)
        acc = float(np.mean(right))
        row = {
            "layers": list(key),
            "dims": int(sum(data.columns[k][1] - data.columns[k][0] for k in key)),
            "val_accuracy": acc,
            "val_accuracy_se": float(np.sqrt(acc * (1 - acc) / n)),
            "val_loss": float(losses.mean()),
            "val_loss_se": float(losses.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
            "fit_seconds": round(seconds, 3),
        }
        return h, losses, row

    def val(self, layers: Sequence[str], *, keep: bool = True) -> dict:
        """Fit on train, score on val: layers, dims, val_accuracy (+ _se), val_loss (+ _se), fit_seconds."""
        return self.val_many([layers], keep=keep)[0]

    def val_many(
        self,
        sets: Sequence[Sequence[str]],
        *,
        keep: bool = True,
        progress: Progress | None = None,
        stage="layers",
    ) -> list[dict]:
        """``val`` of several sets, fitted side by side on the usable cores (one BLAS thread each: a logistic
        regression on a pilot is too small to gain from more, and two fits at once take about half the time)."""
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        keys = [self._key(s) for s in sets]
        todo = list(dict.fromkeys(k for k in keys if k not in self._rows))
        todo.sort(
            key=lambda k: -sum(self.data.columns[n][1] - self.data.columns[n][0] for n in k)
        )  # big first
        done: dict[tuple, tuple] = {}
        workers = min(cpu_count(), len(todo)) if todo else 1
        count = [len(keys) - len(todo)]

        def fit(key):
            out = self._fit(key, workers > 1)
            count[0] += 1
            if progress:
                progress(stage, count[0], len(keys))
            return out

        if workers > 1:
            # One limit around all the threads (per-fit limits would restore each other's settings).
            with threadpool_limits(1), ThreadPoolExecutor(workers) as pool:
                done = dict(zip(todo, pool.map(fit, todo), strict=True))
        else:
            done = {k: fit(k) for k in todo}
        self.fits += len(todo)
        rows = []
        for key in keys:
            if key in self._rows:
                rows.append(dict(self._rows[key]))
                continue
            h, losses, row = done[key]
            if keep:
                self._heads[key], self._losses[key], self._rows[key] = h, losses, row
            rows.append(dict(row))
        return rows

    def losses(self, layers: Sequence[str]) -> np.ndarray:
        """Per-row val log losses of a set scored with ``val`` (keep=True)."""
        return self._losses[tuple(n for n in self.data.order if n in set(layers))]

    def test(self, layers: Sequence[str]) -> float | None:
        """Test accuracy of the head ``val`` fitted on this set; None without a test split."""
        if "test" not in self.data.X:
            return None
        key = tuple(n for n in self.data.order if n in set(layers))
        h = self._heads[key]
        return float(np.mean(h.predict(self.data.take("test", key)) == self.data.y["test"]))


def row_losses(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) log loss of each row: -log of the probability given to its true class (clipped like scikit-learn)."""
    proba = np.asarray(proba, np.float64)
    col = np.searchsorted(classes, y)
    known = (col < len(classes)) & (classes[np.minimum(col, len(classes) - 1)] == y)
    p = np.where(known, proba[np.arange(len(y)), np.minimum(col, len(classes) - 1)], 0.0)
    return -np.log(np.clip(p, np.finfo(np.float64).eps, 1.0))


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of mean(a - b) over the same rows: how much a difference of two val losses is noise."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


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
    layers, dims, val_accuracy, val_loss (each with its standard error, ``_se``), fit_seconds and (``test`` and
    a test split) test_accuracy, scored after every set is fitted."""
    scorer = LayerScorer(cache, head=head, params=params, seed=seed)
    scorer.check({n for s in sets for n in s})
    out = scorer.val_many(sets, progress=progress)
    if test and "test" in scorer.data.X:
        for row in out:
            row["test_accuracy"] = scorer.test(row["layers"])
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
    scorer: LayerScorer | None = None,
) -> LayerSearch:
    """Forward selection of layers on the val split: start empty, add the layer whose set gives the lowest val
    log loss, stop when the best addition lowers it by less than ``min_gain`` (a fraction) or ``max_layers``
    are chosen. ``candidates`` default to every layer of the cache. The test split is scored once, after.
    ``scorer``: a LayerScorer of ``cache`` already in RAM (its head, params and seed are used)."""
    if not isinstance(max_layers, int) or isinstance(max_layers, bool) or max_layers < 1:
        raise HeadError(f"max_layers={max_layers!r} must be a positive integer, e.g. 4.")
    if not 0 <= float(min_gain) < 1:
        raise HeadError(f"min_gain={min_gain!r} must be a fraction from 0 to 1, e.g. 0.01.")
    t0 = time.perf_counter()
    scorer = scorer or LayerScorer(cache, head=head, params=params, seed=seed)
    pool = list(scorer.order if candidates is None else candidates)
    scorer.check(pool)
    chosen: list[str] = []
    steps: list[dict] = []
    fits = 0
    total = sum(len(pool) - k for k in range(min(max_layers, len(pool))))
    while len(chosen) < min(max_layers, len(pool)):
        names = [n for n in pool if n not in chosen]
        scored = scorer.val_many([[*chosen, n] for n in names], keep=False)
        tried = list(zip(names, scored, strict=True))
        fits += len(names)
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
    layers = tuple(n for n in scorer.order if n in set(chosen))
    notes = [scorer.data.val_note] if scorer.data.val_note else []
    scorer.val(layers)  # the chosen set's head, kept for its test score (and for a caller's comparisons)
    test = scorer.test(layers)
    return LayerSearch(steps, layers, scorer.head, fits, time.perf_counter() - t0, notes, test)


def candidate_sets(cache) -> list[dict]:
    """Every layer set ``advise`` scores from one multi-layer cache: the top layer, each other layer alone, then
    the presets the cache holds (``multiscale`` where measured, ``blocks``: all block outputs, ``wide``: all wide
    points). Each: name, kind ("top" | "block" | "wide" | "preset"), layers, depth (single layers: position in
    the cache), layer (the ``--layer`` value that extracts exactly it: None for the top layer)."""

    order = [n for n, _, _ in layer_columns(cache)]
    top = top_layer(cache)
    # a model file (Keras or ONNX) has no registry family: no wide points told by name
    family = None if is_model_path(cache.config.backbone) else get_spec(cache.config.backbone).family
    out = [{"name": "top layer", "kind": "top", "layers": [top], "depth": order.index(top), "layer": None}]
    for depth, name in enumerate(order):
        if name != top:
            kind = "wide" if is_wide(name, family) else "block"
            out.append({"name": name, "kind": kind, "layers": [name], "depth": depth, "layer": name})
    multiscale = MULTISCALE.get(cache.config.backbone, "").split(",")
    if multiscale != [""] and set(multiscale) <= set(order):
        out.append(
            {
                "name": MULTISCALE_NAME,
                "kind": "preset",
                "layers": multiscale,
                "depth": None,
                "layer": MULTISCALE_NAME,
            }
        )
    for name in (BLOCKS, WIDE):
        if name in layer_names(cache.config.layer) and set(layer_names(cache.config.layer)) <= set(
            NETWORK_SETS
        ):
            layers = set_layers(cache, name)
            if len(layers) > 1:
                out.append({"name": name, "kind": "preset", "layers": layers, "depth": None, "layer": name})
    return out
