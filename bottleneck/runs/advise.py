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
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck._io import write_json_atomic
from bottleneck.callbacks import Notify, Progress
from bottleneck.errors import SourceError

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


@dataclass
class Advice:
    """What ``advise`` measured and recommends; ``rows`` are every scored configuration."""

    source: str
    backbone: str
    per_class: int
    pilot: dict  # {"train", "val", "test"} image counts of the pilot
    train_per_class: int  # median train images per class in the whole source
    rows: list[dict]  # {"name", "kind", "layers", "dims", "val_accuracy", "val_loss", their "_se", ...}
    search: dict  # greedy_layers' path
    cell: dict  # {"data": "little"|"much", "similarity": "similar"|"different", "evidence": [...]}
    recommendation: (
        dict  # {"name", "kind", "backbone", "layers", "layer", "head", val/test, "fine_tune", ...}
    )
    reason: str  # the choice rule's reason, one line
    commands: list[str]
    notes: list[str] = field(default_factory=list)
    caches: dict = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict = field(
        default_factory=dict
    )  # seconds per stage: extract, pixels, score, greedy, fine_tune
    paths: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def markdown(self) -> str:
        from bottleneck.report import markdown_table

        cell, rec = self.cell, self.recommendation
        tuned = " then fine-tuned" if rec["fine_tune"] else ""
        lines = [
            f"# Advice for {self.source} with {self.backbone}",
            "",
            f"Pilot: {self.pilot['train']} train / {self.pilot['val']} val / {self.pilot['test']} test images "
            f"({self.per_class} per class at most); the whole source has ~{self.train_per_class} train images per "
            "class.",
            "",
            f"**Cell: {cell['data']} data, {_similarity(cell)}.** " + " ".join(cell["evidence"]),
            "",
            f"**Recommended:** {rec['name']} with a {rec['head']} head{tuned} (val {rec['val_accuracy']:.4f}, "
            f"log loss {rec['val_loss']:.4f}; test {_fmt(rec['test_accuracy'])}).",
            f"Why: {self.reason}",
            "",
            "Run it on the whole data (a POSIX shell; each command as printed):",
            "",
            *[f"    {c}" for c in self.commands],
            "",
        ]
        headers = ["configuration", "layers", "dims", "val accuracy", "val log loss", "test accuracy"]
        rows = [
            [
                r["name"] + (" <-" if r.get("chosen") else ""),
                _short(r["layers"]),
                r["dims"],
                _pm(r["val_accuracy"], r.get("val_accuracy_se")),
                _pm(r["val_loss"], r.get("val_loss_se")),
                _fmt(r.get("test_accuracy")),
            ]
            for r in self.rows
        ]
        lines.append(markdown_table(headers, rows))
        lines.append("± one standard error over the val rows; test scored after the choice.")
        steps = " -> ".join(
            f"+{s['added']} ({s['val_accuracy']:.4f}, loss {s['val_loss']:.4f})" for s in self.search["steps"]
        )
        lines.append(f"Greedy layer search (val accuracy, val log loss after each step): {steps}")
        lines += [f"\n{n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def save(self, out) -> dict:
        """advice.md, advice.json and layers.png (accuracy by layer depth, the other configurations as lines)."""
        from bottleneck.report.plots import plot_layers

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.paths = {
            "md": str(out / "advice.md"),
            "json": str(out / "advice.json"),
            "png": str(out / "layers.png"),
        }
        plot_layers(self.rows, out / "layers.png", title=f"{self.backbone} on {Path(self.source).name}")
        (out / "advice.md").write_text(self.markdown())
        write_json_atomic(out / "advice.json", self.to_json(), indent=2)
        return self.paths


def _similarity(cell: dict) -> str:
    return "similar to ImageNet" if cell["similarity"] == "similar" else "different from ImageNet"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _pm(v, se) -> str:
    return f"{v:.4f}" if se is None else f"{v:.4f} ± {se:.4f}"


def _short(layers) -> str:
    return ",".join(layers) if len(layers) <= 3 else f"{len(layers)} layers"


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
    from bottleneck.backbones.presets import BLOCKS, WIDE, WIDE_PATTERNS
    from bottleneck.backbones.registry import get_spec
    from bottleneck.cache.key import is_model_path
    from bottleneck.config import ExtractConfig
    from bottleneck.data import open_source
    from bottleneck.inference.runner import extract
    from bottleneck.runs.compare import baseline_cache
    from bottleneck.runs.layers import LayerScorer, candidate_sets, greedy_layers

    t0 = time.perf_counter()
    backbone = backbone or ExtractConfig().backbone
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
    advice.save(Path(out) if out is not None else Path(runs_dir) / f"advise-{_stem(source)}-{backbone}")
    return advice


def _stem(source) -> str:
    return Path(str(source).rstrip("/")).stem or "source"


def _se_function(cache, pixels, losses):
    """se_of(a, b): the paired standard error of two rows' val loss difference when both were scored on the
    same val images (the pixels cache has the pilot's rows), else the two standard errors combined."""
    import numpy as np

    from bottleneck.runs.layers import paired_se

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


def commands(source, rec: dict, names: dict, *, cache_dir="cache", runs_dir="runs") -> list[str]:
    """The shell commands that build ``rec`` on the whole of ``source``: extract (its path captured), fit-head
    into a named run folder, the fine-tune with the recipe measured (only when it was recommended), export."""
    q = shlex.quote
    extract = f"bottleneck extract {q(str(source))} --backbone {q(rec['backbone'])}"
    if rec["backbone"] != "pixels":
        if names.get("weights") not in (None, "imagenet"):
            extract += f" --weights {q(str(names['weights']))}"
        if names.get("image_size"):
            extract += f" --image-size {int(names['image_size'])}"
        if rec["layer"]:
            extract += f" --layer {q(rec['layer'])}"
    if str(cache_dir) != "cache":
        extract += f" --cache-dir {q(str(cache_dir))}"
    run = Path(runs_dir) / f"advised-{_stem(source)}"
    out = [f"CACHE=$({extract})", f'bottleneck fit-head "$CACHE" --head logreg --out {q(str(run))}']
    if rec["fine_tune"]:
        tuned = Path(f"{run}-fine-tuned")
        out.append(
            f"bottleneck fine-tune {q(str(run))}{_recipe_options(rec['recipe'])} --out {q(str(tuned))}"
        )
        run = tuned
    out.append(f"bottleneck export {q(str(run))} --format onnx")
    return out


def _recipe_options(recipe: dict) -> str:
    """The fine-tune options that repeat ``recipe`` (a fine-tuned run's params): --name value, --flag/--no-flag."""
    parts = []
    for key, value in recipe.items():
        if key == "seed" or value is None:
            continue
        option = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(option if value else "--no-" + key.replace("_", "-"))
        else:
            parts.append(f"{option} {shlex.quote(str(value))}")
    return "".join(" " + p for p in parts)


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
    return {
        "name": f"fine-tune from {start['name']}",
        "kind": "fine-tune",
        "depth": None,
        "layers": list(start["layers"]),
        "layer": start["layer"],
        "dims": start["dims"],
        "val_accuracy": m["val"]["accuracy"],
        "val_accuracy_se": None,
        "val_loss": m["val"]["log_loss"],
        "val_loss_se": None,
        "test_accuracy": m.get("test", {}).get("accuracy"),
        "recipe": recipe,
        "fit_seconds": round(time.perf_counter() - t0, 3),
    }
