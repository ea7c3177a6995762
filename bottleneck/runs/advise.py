"""`advise`: measure on a pilot sample which configuration fits a dataset, and print the commands that build it.

The classic table (little/much data x similar/different from ImageNet) decides between a head on the top
layer, earlier layers, fine-tuning the top, or fine-tuning most of the network. Here it is measured: one
backbone pass over a stratified pilot reads every block's output and the family's wide points; logistic
regressions score every configuration those columns can build (each layer, the greedy set, the presets) and
the raw pixels, in seconds each; the choice weighs each val log loss against its noise.
"""

from __future__ import annotations

import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bottleneck._ownership import check_out
from bottleneck.backbones.model_file import is_model_path
from bottleneck.backbones.onnx_file import is_onnx_path
from bottleneck.backbones.presets import BLOCKS, WIDE, WIDE_PATTERNS
from bottleneck.backbones.registry import get_spec
from bottleneck.cache.reader import Cache
from bottleneck.callbacks import Notify, Progress
from bottleneck.config import ExtractConfig
from bottleneck.constraints import validate_params
from bottleneck.data import open_source
from bottleneck.errors import BottleneckError, SourceError
from bottleneck.inference.runner import extract
from bottleneck.job_settings import ADVISE, MIN_TRAIN_PER_CLASS
from bottleneck.runs.choice import choose, se_function, table_cell
from bottleneck.runs.comparison import baseline_cache
from bottleneck.runs.fit import fit_head
from bottleneck.runs.layer_sets import LayerScorer, LayerSearch, candidate_sets, greedy_layers
from bottleneck.runs.recommendation import Advice, advised_run, commands, stem_of

PILOT_HOLDOUT = 0.2  # share of each class held out as test when the source has no test split
PILOT_VAL = 0.2  # share of the pilot's train carved out as val when the source has no val split
# The short fine-tune's recipe: fine-tune's defaults on the plain pilot images, no cached augmented views. Building
# 4 views of the pilot's train images was the largest part of a cold advise (120.4 s on a 10 x 100 pilot against
# 90.7 s without them), and on every pilot measured (Fashion-MNIST 10 x 100 and 300 per class, digits, faces) the
# fine-tune kept its start either way (docs/benchmarks.md "Advise"). Printed as measured (`--views 0`) when it
# is recommended.
PILOT_FINE_TUNE = {"views": 0}
# By default the short fine-tune runs only on a pilot with at least this many train images per class. Every pilot
# measured below it kept its start, so the fine-tune could not change the advice and was up to 40 % of a cold
# advise: Fashion-MNIST 80 and 300 per class, digits 100, faces 80. Fine-tuning did pay from 500 per class
# (Fashion-MNIST: +2.25 points over the best frozen head) and on the whole of Fashion-MNIST (docs/benchmarks.md).
PILOT_FINE_TUNE_FROM = 500
# The greedy search in advise starts from the layers best alone (by val log loss): its later steps fit
# (pool - 1) + (pool - 2) + ... heads, and a layer weak alone rarely helps a set (README, "Which strategy?").
GREEDY_POOL = 12


def check_source(manifest, per_class: int, notify: Notify | None) -> int:
    """Median train images per class; SourceError for fewer than 2 classes or a class under 5 train images."""
    counts = {name: 0 for name in manifest.class_names}
    for it in manifest.items_of("train"):
        counts[manifest.class_names[it.label]] += 1
    present = {k: v for k, v in counts.items() if v}
    if len(present) < 2:
        raise SourceError(
            f"{manifest.source} has {len(present)} class(es) with train images; advice compares classifiers, "
            "which need at least 2 classes (one folder per class)."
        )
    few = sorted((v, k) for k, v in counts.items() if v < MIN_TRAIN_PER_CLASS)
    if few:
        listed = ", ".join(f"{k} ({v})" for v, k in few[:5])
        raise SourceError(
            f"{len(few)} class(es) have fewer than {MIN_TRAIN_PER_CLASS} train images: {listed}; add images or "
            "remove those classes before asking for advice."
        )
    smallest = min(counts.values())
    if per_class > smallest and notify:
        notify(f"per_class={per_class} is more than the smallest class has ({smallest}); using what there is")
    return int(statistics.median(counts.values()))


# The numeric options of ``advise`` (``backbone``, ``weights`` and ``engine`` are ExtractConfig's own checks).


def advise(
    source,
    *,
    backbone: str | None = None,
    per_class: int = 100,
    seed: int = 0,
    image_size: int | None = None,
    weights: str = "imagenet",
    engine: str = "auto",
    fine_tune: bool | None = None,
    preprocess: str | None = None,
    mean: str | None = None,
    std: str | None = None,
    channels: str | None = None,
    cache_dir="cache",
    runs_dir="runs",
    out=None,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> Advice:
    """Measure which configuration suits ``source`` on a stratified pilot and recommend the commands to build it.

    One pass of ``backbone`` (default: the default backbone) reads ``layer="blocks,wide"`` (``blocks`` where the
    family has no wide points) on at most ``per_class`` train images per class (the source's test split, else
    a held-out fifth of each class, is scored), and the ``pixels`` baseline is extracted beside it. Logistic
    regressions score, on val, every configuration those columns build: pixels, the top layer, each layer
    alone, the greedy layer set, the presets (``multiscale`` where measured, all block outputs, all wide
    points). ``choose`` picks one; the test split is scored after. With ``fine_tune`` (None: when the pilot has
    ``PILOT_FINE_TUNE_FROM`` train images per class), a short ``tuning.fine_tuning`` (its default recipe on the
    plain images: ``PILOT_FINE_TUNE``) starts from the chosen backbone configuration; it is recommended only
    when it lowers the val log loss by more than a standard error. An ONNX model file (``backbone="model.onnx"``)
    is measured at its default features, with ``preprocess`` or ``mean``/``std``/``channels`` as ``extract``
    takes them; it has no fine-tune candidate.
    Writes advice.md, advice.json and layers.png to ``out`` (default ``runs_dir/advise-<source>-<backbone>``).
    The caches are keyed like any other: asking again, or ``compare`` on them, is a cache hit.
    """
    t0 = time.perf_counter()
    validate_params(
        {"per_class": per_class, "seed": seed, "image_size": image_size, "fine_tune": fine_tune}, ADVISE
    )
    backbone = backbone or ExtractConfig().backbone
    # a model file is named by its stem: its path would nest folders in the name
    name = Path(backbone).stem if is_model_path(backbone) else backbone
    out = Path(out) if out is not None else Path(runs_dir) / f"advise-{stem_of(source)}-{name}"
    check_out(out, force=force)  # before the pilot's minutes of work, not after
    with open_source(source) as src:
        train_per_class = check_source(src.manifest, per_class, notify)
        has_val = "val" in src.manifest.splits()
    laps = _Laps(t0)
    config = {"backbone": backbone, "weights": weights, "image_size": image_size, "engine": engine}
    # an ONNX model file's declared preprocessing (or its sidecar's, when none is given)
    declared = {"preprocess": preprocess, "mean": mean, "std": std, "channels": channels}
    config.update({k: v for k, v in declared.items() if v is not None})
    pilot_sample = {"per_class": per_class, "seed": seed, "holdout": PILOT_HOLDOUT}
    options = {"pilot": pilot_sample, "seed": seed, "val_fraction": None if has_val else PILOT_VAL}
    pilot = _pilot(source, config, options, cache_dir, laps=laps, progress=progress, notify=notify)
    scoring = _score(pilot, seed=seed, laps=laps, progress=progress)
    rows, notes = scoring.rows, list(scoring.search.notes)
    chosen, reason = choose(rows, scoring.se_of)
    frozen, _ = choose([r for r in rows if r["kind"] != "pixels"], scoring.se_of)
    for r in rows:  # test only now, after the choice
        r["test_accuracy"] = scoring.scorer_of(r).test(r["layers"])
    cell = table_cell(rows, train_per_class, scoring.se_of)
    if fine_tune is None:
        fine_tune = _pilot_fine_tune_pays(per_class, cell, train_per_class, source, runs_dir, notes)
    if fine_tune:
        start = chosen if chosen["kind"] != "pixels" else frozen
        tuned = _short_fine_tune(pilot.cache, start, seed, runs_dir, progress, notify, notes)
        laps.lap("fine_tune")
        chosen, reason = _weigh_fine_tune(rows, chosen, reason, start, tuned, notes)
    for r in rows:
        r["chosen"] = r is chosen
    advice = _advice(
        source,
        chosen,
        reason,
        pilot=pilot,
        scoring=scoring,
        cell=cell,
        notes=notes,
        names={"backbone": backbone, "weights": weights, "image_size": image_size} | declared,
        per_class=per_class,
        train_per_class=train_per_class,
        cache_dir=cache_dir,
        runs_dir=runs_dir,
    )
    advice.seconds = round(time.perf_counter() - t0, 3)
    advice.timings = laps.timings
    advice.save(out, force=force, notify=notify)
    return advice


def _advice(
    source,
    chosen,
    reason,
    *,
    pilot,
    scoring,
    cell,
    notes,
    names,
    per_class,
    train_per_class,
    cache_dir,
    runs_dir,
) -> Advice:
    """The advice of the chosen row: the recommendation, its commands, and a note when the pixels won."""
    backbone = names["backbone"]
    pix = next((r for r in scoring.rows if r["kind"] == "pixels"), None)
    if pix is not None and chosen is pix:
        notes.append(
            f"The raw pixels score as well as the best {backbone} configuration within the noise: the backbone is "
            "not worth its cost here. Other options: another backbone, fine-tuning most of the network, or a "
            "model trained from scratch."
        )
    recommendation = _recommendation(chosen, backbone)
    cache, pixels = pilot.cache, pilot.pixels
    return Advice(
        source=str(Path(source)),
        backbone=backbone,
        per_class=per_class,
        pilot={s: cache.n(s) for s in ("train", "val", "test") if s in cache.splits},
        train_per_class=train_per_class,
        rows=scoring.rows,
        search=scoring.search.to_json(),
        cell=cell,
        recommendation=recommendation,
        reason=reason,
        commands=commands(source, recommendation, names, cache_dir=cache_dir, runs_dir=runs_dir),
        notes=notes,
        caches={"pilot": str(cache.path), "pixels": str(pixels.path) if pixels is not None else None},
    )


class _Laps:
    """Seconds per stage of ``advise`` (``check`` from the start, then each stage since the previous one)."""

    def __init__(self, t0: float):
        self.timings = {"check": round(time.perf_counter() - t0, 3)}
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        self.timings[stage] = round(time.perf_counter() - self._clock, 3)
        self._clock = time.perf_counter()


@dataclass(frozen=True)
class _Pilot:
    """The pilot's caches: the backbone's blocks (and wide points) and the pixels (None when it cannot be built)."""

    cache: Cache
    pixels: Cache | None


def _pilot(source, config: dict, options: dict, cache_dir, *, laps: _Laps, progress, notify) -> _Pilot:
    """One backbone pass over the stratified pilot (``options``: the pilot sample, seed, val fraction) reading
    ``blocks`` (and ``wide`` where the family has wide points), and the pixels baseline beside it."""
    backbone = config["backbone"]
    family = None if is_model_path(backbone) else get_spec(backbone).family
    layer = f"{BLOCKS},{WIDE}" if family in WIDE_PATTERNS else BLOCKS
    if is_onnx_path(backbone):
        layer = (
            None  # a user's graph has no known blocks: its features (the classifier's input) and the pixels
        )
    cache = extract(
        source, cache_dir=cache_dir, layer=layer, progress=progress, notify=notify, **config, **options
    ).cache
    laps.lap("extract")
    pixels, _ = baseline_cache(cache, progress=progress, notify=notify)
    laps.lap("pixels")
    return _Pilot(cache, pixels)


@dataclass(frozen=True)
class _Scoring:
    """Every candidate configuration scored on val (``rows``: pixels, the top layer, each layer, the presets, the
    greedy set), the greedy search, and the standard error of two rows' val loss difference (``se_of``)."""

    rows: list[dict]
    search: LayerSearch  # the greedy search's result (layers, notes, to_json)
    scorer: LayerScorer
    pix_scorer: LayerScorer | None
    se_of: Callable[[dict, dict], float]

    def scorer_of(self, row: dict) -> LayerScorer:
        return self.pix_scorer if row["kind"] == "pixels" else self.scorer


def _score(pilot: _Pilot, *, seed: int, laps: _Laps, progress) -> _Scoring:
    cache, pixels = pilot.cache, pilot.pixels
    scorer = LayerScorer(cache, seed=seed)
    rows = []
    pix_scorer = None
    if pixels is not None:
        pix_scorer = LayerScorer(pixels, seed=seed)
        p = pix_scorer.val(pix_scorer.order)
        rows.append({"name": "pixels", "kind": "pixels", "depth": None, "layer": None, **p})
    sets = candidate_sets(cache)
    for c, scored in zip(sets, scorer.val_many([c["layers"] for c in sets], progress=progress), strict=True):
        rows.append({**c, **scored})
    laps.lap("score")
    singles = sorted((r for r in rows if r["kind"] in ("top", "block", "wide")), key=lambda r: r["val_loss"])
    pool = [r["layers"][0] for r in singles[:GREEDY_POOL]]
    search = greedy_layers(cache, scorer=scorer, candidates=pool, progress=progress)
    greedy = scorer.val(search.layers)
    rows.append(
        {"name": "greedy set", "kind": "greedy", "depth": None, "layer": ",".join(search.layers), **greedy}
    )
    laps.lap("greedy")

    def losses(row):
        return pix_scorer.losses(row["layers"]) if row["kind"] == "pixels" else scorer.losses(row["layers"])

    return _Scoring(rows, search, scorer, pix_scorer, se_function(cache, pixels, losses))


def _pilot_fine_tune_pays(
    per_class: int, cell: dict, train_per_class: int, source, runs_dir, notes: list
) -> bool:
    """Whether the default advise runs the short fine-tune: on a pilot of ``PILOT_FINE_TUNE_FROM`` train images
    per class or more (``per_class``, as far as the whole source's ``train_per_class`` has them). Otherwise a
    note says why not and, with much data in the whole source, how to measure a fine-tune there."""
    per_class = min(per_class, train_per_class)
    if per_class >= PILOT_FINE_TUNE_FROM:
        return True
    note = (
        f"The short fine-tune did not run: the pilot has ~{per_class} train images per class, and every pilot "
        f"measured with under {PILOT_FINE_TUNE_FROM} kept its start, so it could not have changed the advice "
        "(docs/benchmarks.md, Advise); --fine-tune runs it anyway."
    )
    if cell["data"] == "much":
        run = advised_run(source, runs_dir)
        note += (
            f" The whole source has ~{train_per_class} per class, where fine-tuning can pay (all of Fashion-MNIST: "
            f"test 0.905 -> 0.941); after the commands above, `bottleneck fine-tune {shlex.quote(str(run))}` "
            "measures it."
        )
    notes.append(note)
    return False


def _weigh_fine_tune(
    rows: list, chosen: dict, reason: str, start: dict, tuned: dict | None, notes: list
) -> tuple[dict, str]:
    """The short fine-tune (a row added to ``rows``; None when it did not run) is chosen only when it lowers the
    chosen row's val log loss by more than one standard error; the note says which way it went."""
    if tuned is None:
        return chosen, reason
    rows.append(tuned)
    gain = chosen["val_loss"] - tuned["val_loss"]
    need = chosen["val_loss_se"]
    verdict = "recommended" if gain > need else "not recommended"
    notes.append(
        f"The short fine-tune from {start['name']} changed the val log loss by {-gain:+.4f} against "
        f"{chosen['name']} (it must lower it by more than one standard error, {need:.4f}): {verdict}."
    )
    if gain > need:
        return tuned, reason + f" The short fine-tune lowered it by {gain:.4f} more."
    return chosen, reason


def _recommendation(row: dict, backbone: str) -> dict:
    pixels = row["kind"] == "pixels"
    if pixels:
        name = "pixels (no backbone)"
    elif row["kind"] == "top" or (row["kind"] == "fine-tune" and row["layer"] is None):
        name = "top layer"
    else:
        name = (
            f"--layer {row['layer']}" if row["kind"] in ("preset", "fine-tune") else f"layers {row['layer']}"
        )
    return {
        "name": name + (" + fine-tune" if row["kind"] == "fine-tune" else ""),
        "kind": row["kind"],
        "backbone": "pixels" if pixels else backbone,
        "layers": list(row["layers"]),
        "layer": row["layer"],
        "head": "logreg",
        "val_accuracy": row["val_accuracy"],
        "val_loss": row["val_loss"],
        "test_accuracy": row.get("test_accuracy"),
        "fine_tune": row["kind"] == "fine-tune",
        "recipe": row.get("recipe"),
    }


def _short_fine_tune(cache, start, seed, runs_dir, progress, notify, notes) -> dict | None:
    """``tuning.fine_tuning`` with its default recipe less the views (``PILOT_FINE_TUNE``) from a logreg head on
    ``start``'s layers; a row like the others (val and test from the fine-tuned model), or None if it cannot
    run."""
    from bottleneck.tuning import fine_tune  # a later stage, composed lazily (ARCHITECTURE.md)

    run = fit_head(cache.select(start["layers"]), "logreg", seed=seed, save=False)
    t0 = time.perf_counter()
    try:
        tuned = fine_tune(run, seed=seed, save=False, progress=progress, notify=notify, **PILOT_FINE_TUNE)
    except BottleneckError as exc:
        notes.append(f"The short fine-tune did not run: {exc}")
        return None
    m = tuned.summary["metrics"]
    recipe = dict(tuned.summary.get("params") or {})
    # The kept model's val loss before its temperature: the other candidates' losses are not calibrated, and a
    # temperature fitted on val lowers this one by calibration alone. (A kept start is the head, unchanged.)
    sel = tuned.summary["selection"]
    val_loss = (
        m["val"]["log_loss"]
        if sel["kept start"]
        else tuned.summary["history"]["val_loss_uncalibrated"][sel["best epoch"] - 1]
    )
    return {
        "name": f"fine-tune from {start['name']}",
        "kind": "fine-tune",
        "depth": None,
        "layers": list(start["layers"]),
        "layer": start["layer"],
        "dims": start["dims"],
        "val_accuracy": m["val"]["accuracy"],
        "val_accuracy_se": None,
        "val_loss": val_loss,
        "val_loss_se": None,
        "test_accuracy": m.get("test", {}).get("accuracy"),
        "recipe": recipe,
        "fit_seconds": round(time.perf_counter() - t0, 3),
    }
