"""Comparing heads across caches and seeds: one table of accuracy, balanced accuracy and fit time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck._io import write_json_atomic
from bottleneck._ownership import atomic_dir, check_out
from bottleneck.cache.reader import as_cache
from bottleneck.callbacks import Progress
from bottleneck.config import layer_names
from bottleneck.constraints import SEED, check
from bottleneck.errors import BottleneckError, HeadError, one_of
from bottleneck.heads import HEADS, canonical_name, head_params, make_head
from bottleneck.heads.feature_blocks import available_memory, nbytes, take_rows, to_memory
from bottleneck.inference.runner import extract
from bottleneck.report import (
    classification_metrics,
    csv_text,
    markdown_table,
    markdown_text,
    mean_std,
    plot_comparison,
)
from bottleneck.runs.fit import selection_summary
from bottleneck.runs.layer_sets import greedy_layers


def head_applies(name: str, cache) -> str | None:
    """Why a head cannot run on a cache (shown in a comparison instead of failing it), or None."""
    if name == "sigmoid" and len(cache.class_names) != 2:
        return f"sigmoid needs 2 classes, the cache has {len(cache.class_names)}"
    if name == "pool-dense" and len(cache.feature_shape) != 3:
        return "pool-dense needs spatial features (pooling='none')"
    return None


@dataclass
class Comparison:
    """Results of ``compare``: ``rows`` (one per cache x head, mean and std over seeds), ``records`` (one per
    fit) and ``skipped`` heads with the reason."""

    rows: list[dict]
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    searches: list[dict] = field(default_factory=list)  # greedy layer searches: the path of each

    COLUMNS = ("cache", "backbone", "head", "split", "n_seeds")
    METRICS = ("accuracy", "balanced_accuracy", "fit_seconds")

    def markdown(self) -> str:
        headers = ["cache", "backbone", "head", "split", "accuracy", "balanced accuracy", "fit s"]
        rows = []
        for r in self.rows:
            vals = [
                [rec[m] for rec in self.records if rec["cache"] == r["cache"] and rec["head"] == r["head"]]
                for m in self.METRICS
            ]
            rows.append(
                [
                    r["cache"],
                    r["backbone"],
                    r["head"],
                    r["split"],
                    mean_std(vals[0]),
                    mean_std(vals[1]),
                    mean_std(vals[2], 2),
                ]
            )
        text = markdown_table(headers, rows)
        if self.rows and self.rows[0]["n_seeds"] > 1:
            text += f"\nmean ± std over {self.rows[0]['n_seeds']} seeds\n"
        for search in self.searches:
            path = " -> ".join(
                f"+{st['added']} ({st['val_accuracy']:.4f}, loss {st['val_loss']:.4f})"
                for st in search["steps"]
            )
            text += (
                f"\ngreedy layers on {markdown_text(search['cache'])} (val accuracy, val log loss): {path}"
            )
        for s in self.skipped:
            text += f"\nskipped {s['head']} on {markdown_text(s['cache'])}: {markdown_text(s['reason'])}"
        return text + ("\n" if self.skipped or self.searches else "")

    def csv(self) -> str:
        headers = [*self.COLUMNS, *(f"{m}_{s}" for m in self.METRICS for s in ("mean", "std"))]
        return csv_text(headers, [[r.get(h) for h in headers] for r in self.rows])

    def to_json(self) -> dict:
        return {
            "rows": self.rows,
            "records": self.records,
            "skipped": self.skipped,
            "searches": self.searches,
            "paths": self.paths,
        }

    def save(self, out, *, force: bool = False, notify=None) -> dict:
        """Write comparison.md, comparison.csv, comparison.json and comparison.png into ``out``."""
        out = Path(out)
        self.paths = {k: str(out / f"comparison.{k}") for k in ("md", "csv", "json", "png")}
        if not self.rows:
            self.paths.pop("png")
        # Built aside and renamed when whole: never a comparison.md beside the previous run's comparison.json.
        with atomic_dir(out, "comparison", force=force, notify=notify) as tmp:
            (tmp / "comparison.md").write_text(self.markdown())
            (tmp / "comparison.csv").write_text(self.csv())
            if self.rows:
                plot_comparison(self.rows, tmp / "comparison.png")
            write_json_atomic(tmp / "comparison.json", self.to_json(), indent=2)
        return self.paths


def _backbone_label(config) -> str:
    """The backbone plus whatever else sets its caches apart: "efficientnet_lite0@288[3 layers]/max"."""
    names = layer_names(config.layer)
    label = config.backbone + (f"@{config.image_size}" if config.image_size else "")
    if names:
        label += f"[{names[0]}]" if len(names) == 1 else f"[{len(names)} layers]"
    return label + ("" if config.pooling == "avg" else f"/{config.pooling}")


def _load_for_compare(cache, split: str, budget: int):
    """A split in RAM when it fits the budget (every head reuses it), else the on-disk array."""
    X = cache.features(split)
    return (to_memory(X) if nbytes(X) <= budget else X), cache.labels(split)


def baseline_cache(cache, *, progress: Progress | None = None, notify=None):
    """(the ``pixels`` cache of the images of ``cache``, None) or (None, why there is none).

    Extracted once next to ``cache`` with the same source options (splits, pilot sample, val split), so its
    rows are the same images; later calls are cache hits.
    """
    source = cache.meta.get("source")
    if cache.config.backbone == "pixels":
        return None, "it is the pixel baseline"
    if not source or not Path(source).exists():
        return None, f"its source {source or '(not recorded)'} is not here to read the pixels from"
    options = dict(cache.meta.get("source_options") or {})
    result = extract(
        source,
        cache_dir=cache.path.parent,
        backbone="pixels",
        format=cache.config.format,
        on_bad_image=cache.config.on_bad_image,
        progress=progress,
        notify=notify,
        **options,
    )
    return result.cache, None


def _expand(caches, layers, layer_search, baseline, heads, progress, notify):
    """(cache, heads) pairs to fit: each cache or its layer subsets, greedy sets, then pixel baselines."""
    if layer_search not in (None, "greedy"):
        raise one_of("layer_search", layer_search, ["greedy", "None"])
    todo, searches, skipped, sources = [], [], [], set()
    for cache in caches:
        todo += [(cache.select(subset), heads) for subset in layers] if layers else [(cache, heads)]
        if layer_search == "greedy":
            search = greedy_layers(cache, progress=progress)
            searches.append({"cache": cache.name, **search.to_json()})
            todo.append((cache.select(search.layers), heads))
    for cache in caches if baseline else ():
        source = (cache.meta.get("source"), str(cache.meta.get("source_options")), tuple(cache.class_names))
        if source in sources:
            continue
        sources.add(source)
        pixels, reason = baseline_cache(cache, notify=notify)
        if pixels is None:
            skipped.append({"cache": cache.name, "head": "pixels baseline", "reason": reason})
        else:
            todo.append((pixels, ("logreg",)))
    # A subset asked twice (or also found by the search) is fitted once.
    unique = {(str(c.path), c.key): (c, h) for c, h in todo}
    return list(unique.values()), searches, skipped


def compare(
    caches: Sequence,
    heads: Sequence[str] = ("logreg", "linear", "mlp"),
    *,
    seeds: Sequence[int] = (0,),
    params: dict | None = None,
    layers: Sequence | None = None,
    layer_search: str | None = None,
    baseline: bool = False,
    out=None,
    force: bool = False,
    progress: Progress | None = None,
    notify=None,
) -> Comparison:
    """Fit every head on every cache with every seed; report accuracy, balanced accuracy and fit seconds on
    ``test`` (``val`` when a cache has no test split), mean and std over seeds.

    ``params`` are hyper-parameters given to each head that has them (e.g. ``{"epochs": 20}`` reaches the
    Keras heads, not logreg); ``{"mlp": {"width": 512}}`` targets one head. Heads that do not apply to a
    cache (sigmoid with more than 2 classes, pool-dense on pooled features) are listed in ``skipped``.
    ``layers`` lists layer subsets ("a,b", "top", "multiscale"): each is one row per head, read from the
    cache's columns (no extraction). ``layer_search="greedy"`` adds the set ``greedy_layers`` picks on val (its
    steps are in ``searches``). ``baseline`` adds a logreg row on the pixels of the same images (``pixels``).
    With ``out``, saves the table (markdown, CSV, JSON) and a plot there: a folder bottleneck did not write is
    refused before any fit, unless ``force`` (then it is moved aside; see ``_ownership.atomic_dir``).
    """
    heads_plan = _HeadPlan.of(heads, seeds, params)
    if out is not None:
        check_out(out, force=force)
    caches = [as_cache(c) for c in caches]
    if not caches:
        raise BottleneckError("no caches given; pass one or more cache folders.")
    todo, searches, skipped = _expand(
        caches, list(layers or ()), layer_search, baseline, heads_plan.names, progress, notify
    )
    records = []
    fits = _Count(sum(len(h) for _, h in todo) * len(heads_plan.seeds), progress)
    for cache, cache_heads in todo:
        records += _fit_on(cache, cache_heads, heads_plan, skipped=skipped, fits=fits)
    result = Comparison(_rows(todo, records), records, skipped, searches=searches)
    if out is not None:
        result.save(out, force=force, notify=notify)
    return result


@dataclass(frozen=True)
class _HeadPlan:
    """The compared heads (canonical names), the seeds, and the parameters for all heads and for one head,
    every head's parameters checked before any cache is read."""

    names: list[str]
    seeds: list[int]
    params: dict  # for every head that has the parameter
    per_head: dict  # head name -> parameters for that head alone

    @classmethod
    def of(cls, heads, seeds, params) -> _HeadPlan:
        names = [canonical_name(h) for h in heads]
        seeds = list(seeds) or [0]
        for s in seeds:
            check("seeds", s, SEED)
        params = dict(params or {})
        per_head = {k: params.pop(k) for k in list(params) if k in HEADS}
        for k in per_head:
            if k not in names:
                raise HeadError(f"parameters given for head {k}, which is not compared ({', '.join(names)}).")
        for k in params:
            if not any(k in head_params(n) for n in names):
                raise HeadError(f"no compared head ({', '.join(names)}) has a parameter {k!r}.")
        plan = cls(names, seeds, params, per_head)
        for name in names:  # every head's parameters checked before any cache is read
            make_head(name, **plan.kwargs(name))
        return plan

    def kwargs(self, name: str) -> dict:
        valid = head_params(name)
        return {k: v for k, v in self.params.items() if k in valid} | self.per_head.get(name, {})


class _Count:
    """Fits done out of ``total``, told to ``progress``."""

    def __init__(self, total: int, progress):
        self.done, self.total, self.progress = 0, total, progress

    def add(self, n: int = 1, *, tell: bool = True) -> None:
        self.done += n
        if tell and self.progress:
            self.progress("fits", self.done, self.total)


def _fit_on(cache, cache_heads, plan: _HeadPlan, *, skipped: list, fits: _Count) -> list[dict]:
    """One record per head and seed fitted on ``cache`` (heads that do not apply go to ``skipped``), scored on
    test, else val, else the rows a head held out of train."""
    split = "test" if "test" in cache.splits else "val" if "val" in cache.splits else None
    budget = available_memory() // 3
    data = {s: _load_for_compare(cache, s, budget) for s in ("train", "val", split) if s in cache.splits}
    backbone = _backbone_label(cache.config) + (" (baseline)" if cache.config.backbone == "pixels" else "")
    records = []
    for name in cache_heads:
        reason = head_applies(name, cache)
        if reason:
            skipped.append({"cache": cache.name, "head": name, "reason": reason})
            fits.add(len(plan.seeds), tell=False)
            continue
        kw = plan.kwargs(name)
        for seed in plan.seeds:
            head = make_head(name, **(kw | {"random_state": seed}))
            fit_args = {"X_val": data["val"][0], "y_val": data["val"][1]} if "val" in data else {}
            t0 = time.perf_counter()
            head.fit(*data["train"], **fit_args)
            seconds = time.perf_counter() - t0
            if split is None:  # neither val nor test: score the rows the head held out of train
                eval_split = "train (held out)"
                X = take_rows(data["train"][0], head.holdout_)
                y = data["train"][1][head.holdout_]
            else:
                eval_split = split
                X, y = data[split]
            m = classification_metrics(y, head.predict_proba(X), classes=head.classes_)
            records.append(
                {
                    "cache": cache.name,
                    "backbone": backbone,
                    "head": name,
                    "seed": seed,
                    "split": eval_split,
                    "accuracy": m["accuracy"],
                    "balanced_accuracy": m["balanced_accuracy"],
                    "fit_seconds": seconds,
                    "selection": selection_summary(head),
                }
            )
            fits.add()
    return records


def _rows(todo, records: list[dict]) -> list[dict]:
    """One row per cache x head: mean and std over seeds of each metric."""
    rows = []
    for cache, cache_heads in todo:
        for name in cache_heads:
            recs = [r for r in records if r["cache"] == cache.name and r["head"] == name]
            if not recs:
                continue
            row = {k: recs[0][k] for k in ("cache", "backbone", "head", "split")} | {"n_seeds": len(recs)}
            for m in Comparison.METRICS:
                v = np.array([r[m] for r in recs])
                row[f"{m}_mean"] = float(v.mean())
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            rows.append(row)
    return rows
