"""`advise`: measure on a pilot sample which configuration fits a dataset, and print the commands that build it.

The classic table (little/much data x similar/different from ImageNet) decides between a head on the top
layer, earlier layers, fine-tuning the top, or fine-tuning most of the network. Here it is measured: one
backbone pass over a stratified pilot reads every block's output and the family's wide points; logistic
regressions score every configuration those columns can build (each layer, the greedy set, the presets) and
the raw pixels, in seconds each; the choice weighs each val log loss against its noise.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bottleneck._io import check_out
from bottleneck.callbacks import Notify, Progress
from bottleneck.config import SETTINGS as EXTRACT
from bottleneck.constraints import Boolean, Interval, validate_params
from bottleneck.errors import SourceError
from bottleneck.runs.advice import Advice, commands, stem_of
from bottleneck.settings import (
    CACHE_DIR,
    FORCE,
    IMAGE_SIZE_SETTING,
    OUT,
    RUNS_DIR,
    SEED_SETTING,
    Setting,
    Settings,
)

# Train images per class from which a dataset counts as "much data" (enough to fine-tune more than the top).
MUCH_DATA_PER_CLASS = 1000
# Similar to ImageNet or not is decided with the choice rule's own noise criterion: the data is "different" when
# the top layer's val log loss is more than one standard error above the best configuration's (earlier layers,
# or the raw pixels, measurably beat the most ImageNet-specific features). It replaced fixed margins of 1 point
# (best single earlier layer vs top) and 2 points (features vs pixels) of val accuracy, which called
# Fashion-MNIST "similar" although its multi-layer sets beat the top layer by 1.2-1.7 points of test accuracy
# (README, "Which strategy?").
MIN_TRAIN_PER_CLASS = 5
PILOT_HOLDOUT = 0.2  # share of each class held out as test when the source has no test split
PILOT_VAL = 0.2  # share of the pilot's train carved out as val when the source has no val split
# The greedy search in advise starts from the layers best alone (by val log loss): its later steps fit
# (pool - 1) + (pool - 2) + ... heads, and a layer weak alone rarely helps a set (README, "Which strategy?").
GREEDY_POOL = 12
# What a configuration costs, cheapest first: no backbone, a frozen backbone, a fine-tuned one.
TIERS = {"pixels": 0, "fine-tune": 2}


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


def _cell(rows: list[dict], train_per_class: int, se_of) -> dict:
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


# The numeric options of ``advise`` (``backbone``, ``weights`` and ``engine`` are ExtractConfig's own checks).
ADVISE = Settings(
    EXTRACT["backbone"].but(default=None, help="Backbone to measure (default: efficientnet_lite0)."),
    Setting(
        "per_class",
        100,
        Interval(int, MIN_TRAIN_PER_CLASS, None, example=100),
        "Pilot train images per class (at most).",
    ),
    IMAGE_SIZE_SETTING.but(help="Input side in pixels (default: the backbone's)."),
    EXTRACT["weights"].but(help="imagenet | none | path to a weights file."),
    EXTRACT["engine"].but(help="auto | tensorflow | onnx."),
    Setting(
        "fine_tune", True, Boolean(), "Also fine-tune the top block.", flags=("--fine-tune/--no-fine-tune",)
    ),
    SEED_SETTING.but(help="Seed of the pilot sample and the heads."),
    CACHE_DIR.but(help="Where the pilot caches go."),
    RUNS_DIR.but(help="Where the advice folder goes when --out is not given."),
    OUT.but(help="Advice folder (default runs/advise-<source>-<backbone>)."),
    FORCE,
)


def advise(
    source,
    *,
    backbone: str | None = None,
    per_class: int = 100,
    seed: int = 0,
    image_size: int | None = None,
    weights: str = "imagenet",
    engine: str = "auto",
    fine_tune: bool = True,
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
    points). ``choose`` picks one; the test split is scored after. With ``fine_tune``, a short
    ``tuning.fine_tune`` (its default recipe) starts from the chosen backbone configuration; it is
    recommended only when it lowers the val log loss by more than a standard error. Writes advice.md,
    advice.json and layers.png to ``out`` (default ``runs_dir/advise-<source>-<backbone>``). The caches are
    keyed like any other: asking again, or ``compare`` on them, is a cache hit.
    """
    from bottleneck.backbones.model_file import is_model_path
    from bottleneck.backbones.presets import BLOCKS, WIDE, WIDE_PATTERNS
    from bottleneck.backbones.registry import get_spec
    from bottleneck.config import ExtractConfig
    from bottleneck.data import open_source
    from bottleneck.inference.runner import extract
    from bottleneck.runs.compare import baseline_cache
    from bottleneck.runs.layer_sets import LayerScorer, candidate_sets, greedy_layers

    t0 = time.perf_counter()
    validate_params(
        {"per_class": per_class, "seed": seed, "image_size": image_size, "fine_tune": fine_tune}, ADVISE
    )
    backbone = backbone or ExtractConfig().backbone
    out = Path(out) if out is not None else Path(runs_dir) / f"advise-{stem_of(source)}-{backbone}"
    check_out(out, force=force)  # before the pilot's minutes of work, not after
    with open_source(source) as src:
        train_per_class = check_source(src.manifest, per_class, notify)
        has_val = "val" in src.manifest.splits()
    pilot = {"per_class": per_class, "seed": seed, "holdout": PILOT_HOLDOUT}
    options = {"pilot": pilot, "seed": seed, "val_fraction": None if has_val else PILOT_VAL}
    family = None if is_model_path(backbone) else get_spec(backbone).family
    layer = f"{BLOCKS},{WIDE}" if family in WIDE_PATTERNS else BLOCKS
    config = {"backbone": backbone, "weights": weights, "image_size": image_size, "engine": engine}
    timings = {"check": round(time.perf_counter() - t0, 3)}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        timings[stage] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    cache = extract(
        source, cache_dir=cache_dir, layer=layer, progress=progress, notify=notify, **config, **options
    ).cache
    lap("extract")
    pixels, _ = baseline_cache(cache, progress=progress, notify=notify)
    lap("pixels")

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
    lap("score")
    singles = sorted((r for r in rows if r["kind"] in ("top", "block", "wide")), key=lambda r: r["val_loss"])
    pool = [r["layers"][0] for r in singles[:GREEDY_POOL]]
    search = greedy_layers(cache, scorer=scorer, candidates=pool, progress=progress)
    greedy = scorer.val(search.layers)
    rows.append(
        {"name": "greedy set", "kind": "greedy", "depth": None, "layer": ",".join(search.layers), **greedy}
    )
    lap("greedy")

    def losses(row):
        return pix_scorer.losses(row["layers"]) if row["kind"] == "pixels" else scorer.losses(row["layers"])

    se_of = _se_function(cache, pixels, losses)
    chosen, reason = choose(rows, se_of)
    frozen, _ = choose([r for r in rows if r["kind"] != "pixels"], se_of)
    for r in rows:  # test only now, after the choice
        r["test_accuracy"] = (pix_scorer if r["kind"] == "pixels" else scorer).test(r["layers"])
    cell = _cell(rows, train_per_class, se_of)
    notes = list(search.notes)
    tuned = None
    if fine_tune:
        start = chosen if chosen["kind"] != "pixels" else frozen
        tuned = _short_fine_tune(cache, start, seed, runs_dir, progress, notify, notes)
        lap("fine_tune")
        if tuned is not None:
            rows.append(tuned)
            gain = chosen["val_loss"] - tuned["val_loss"]
            need = chosen["val_loss_se"]
            verdict = "recommended" if gain > need else "not recommended"
            notes.append(
                f"The short fine-tune from {start['name']} changed the val log loss by {-gain:+.4f} against "
                f"{chosen['name']} (it must lower it by more than one standard error, {need:.4f}): {verdict}."
            )
            if gain > need:
                chosen, reason = tuned, reason + f" The short fine-tune lowered it by {gain:.4f} more."
    for r in rows:
        r["chosen"] = r is chosen
    pix = next((r for r in rows if r["kind"] == "pixels"), None)
    if pix is not None and chosen is pix:
        notes.append(
            f"The raw pixels score as well as the best {backbone} configuration within the noise: the backbone is "
            "not worth its cost here. Other options: another backbone, fine-tuning most of the network, or a "
            "model trained from scratch."
        )
    recommendation = _recommendation(chosen, backbone)
    names = {"backbone": backbone, "weights": weights, "image_size": image_size}
    advice = Advice(
        source=str(Path(source)),
        backbone=backbone,
        per_class=per_class,
        pilot={s: cache.n(s) for s in ("train", "val", "test") if s in cache.splits},
        train_per_class=train_per_class,
        rows=rows,
        search=search.to_json(),
        cell=cell,
        recommendation=recommendation,
        reason=reason,
        commands=commands(source, recommendation, names, cache_dir=cache_dir, runs_dir=runs_dir),
        notes=notes,
        caches={"pilot": str(cache.path), "pixels": str(pixels.path) if pixels is not None else None},
    )
    advice.seconds = round(time.perf_counter() - t0, 3)
    advice.timings = timings
    advice.save(out, force=force, notify=notify)
    return advice


def _se_function(cache, pixels, losses):
    """se_of(a, b): the paired standard error of two rows' val loss difference when both were scored on the
    same val images (the pixels cache has the pilot's rows), else the two standard errors combined."""
    import numpy as np

    from bottleneck.runs.layer_sets import paired_se

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
    """``tuning.fine_tune`` with its default recipe from a logreg head on ``start``'s layers; a row like the
    others (val and test from the fine-tuned model), or None if it cannot run."""
    from bottleneck.errors import BottleneckError
    from bottleneck.runs.fit import fit_head
    from bottleneck.tuning import fine_tune

    run = fit_head(cache.select(start["layers"]), "logreg", seed=seed, save=False)
    t0 = time.perf_counter()
    try:
        tuned = fine_tune(run, seed=seed, save=False, progress=progress, notify=notify)
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
