"""`advise`: measure on a pilot sample which transfer strategy fits a dataset, and say what to run next.

The classic table (little/much data x similar/different from ImageNet) decides between a head on the top
layer, earlier layers, fine-tuning the top, or fine-tuning most of the network. Which cell a dataset is in is
measured here: one backbone pass over a stratified pilot gives every block's features; a logistic regression
per block, the greedy layer set and a pixel baseline fit in seconds each.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck._io import write_json_atomic
from bottleneck.callbacks import Notify, Progress
from bottleneck.errors import SourceError

# Train images per class from which a dataset counts as "much data" (enough to fine-tune more than the top).
MUCH_DATA_PER_CLASS = 1000
# A mid-level layer beating the top layer by this much (val accuracy) says the data is far from ImageNet.
MID_LEVEL_GAIN = 0.01
# The backbone must beat the raw pixels by this much for transfer to count as helping.
TRANSFER_GAIN = 0.02
MIN_TRAIN_PER_CLASS = 5
PILOT_HOLDOUT = 0.2  # share of each class held out as test when the source has no test split
PILOT_VAL = 0.2  # share of the pilot's train carved out as val when the source has no val split
FINE_TUNE_EPOCHS = 3


@dataclass
class Advice:
    """What ``advise`` measured and recommends; ``rows`` are every scored configuration."""

    source: str
    backbone: str
    per_class: int
    pilot: dict  # {"train", "val", "test"} image counts of the pilot
    train_per_class: int  # median train images per class in the whole source
    rows: list[dict]  # {"name", "kind", "layers", "depth", "dims", "val_accuracy", "test_accuracy", ...}
    search: dict  # greedy_layers' path
    cell: dict  # {"data": "little"|"much", "similarity": "similar"|"different", "evidence": [...]}
    recommendation: dict  # {"name", "layers", "head", "val_accuracy", "test_accuracy", "fine_tune"}
    commands: list[str]
    notes: list[str] = field(default_factory=list)
    caches: dict = field(default_factory=dict)
    seconds: float = 0.0
    paths: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def markdown(self) -> str:
        from bottleneck.report import markdown_table

        cell = self.cell
        lines = [
            f"# Advice for {self.source} with {self.backbone}",
            "",
            f"Pilot: {self.pilot['train']} train / {self.pilot['val']} val / {self.pilot['test']} test images "
            f"({self.per_class} per class at most); the whole source has ~{self.train_per_class} train images per "
            "class.",
            "",
            f"**Cell: {cell['data']} data, {_similarity(cell)}.** " + " ".join(cell["evidence"]),
            "",
            f"**Recommended:** {self.recommendation['name']} with a {self.recommendation['head']} head "
            f"(val {self.recommendation['val_accuracy']:.4f}, test {_fmt(self.recommendation['test_accuracy'])}).",
            "",
            "Next:",
            "",
            *[f"    {c}" for c in self.commands],
            "",
        ]
        headers = ["configuration", "layers", "dims", "val accuracy", "test accuracy"]
        rows = [
            [r["name"], _short(r["layers"]), r["dims"], f"{r['val_accuracy']:.4f}", _fmt(r["test_accuracy"])]
            for r in self.rows
        ]
        lines.append(markdown_table(headers, rows))
        steps = " -> ".join(f"+{s['added']} ({s['val_accuracy']:.4f})" for s in self.search["steps"])
        lines.append(f"Greedy layer search (val accuracy after each step): {steps}")
        lines += [f"\n{n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def save(self, out) -> dict:
        """advice.md, advice.json and layers.png (accuracy by layer depth, the pixel baseline as a line)."""
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


def _cell(rows: list[dict], train_per_class: int) -> dict:
    by_kind = {r["kind"]: r for r in rows if r["kind"] in ("pixels", "top")}
    top, pixels = by_kind["top"], by_kind.get("pixels")
    blocks = [r for r in rows if r["kind"] == "block"]
    best_mid = max(blocks, key=lambda r: r["val_accuracy"]) if blocks else top
    gain = best_mid["val_accuracy"] - top["val_accuracy"]
    best = max(r["val_accuracy"] for r in rows if r["kind"] != "pixels")
    evidence = [
        f"The best earlier layer ({best_mid['layers'][0]}) scores {gain * 100:+.1f} points of val accuracy "
        "against the top layer."
    ]
    different = gain >= MID_LEVEL_GAIN
    if pixels is not None:
        lead = best - pixels["val_accuracy"]
        evidence.append(f"The best backbone features beat the raw pixels by {lead * 100:+.1f} points.")
        different = different or lead < TRANSFER_GAIN
    data = "much" if train_per_class >= MUCH_DATA_PER_CLASS else "little"
    evidence.append(
        f"~{train_per_class} train images per class is {'at least' if data == 'much' else 'under'} "
        f"{MUCH_DATA_PER_CLASS}."
    )
    return {"data": data, "similarity": "different" if different else "similar", "evidence": evidence}


def _commands(
    source: str, backbone: str, image_size, layers: tuple, cell: dict, fine_tune_helps: bool
) -> list:
    extract = f"bottleneck extract {source} --backbone {backbone}"
    if image_size:
        extract += f" --image-size {image_size}"
    if layers:
        extract += f" --layer {','.join(layers)}"
    commands = [extract, "bottleneck fit-head CACHE --head logreg    # CACHE: the folder extract printed"]
    if cell["data"] == "much" or fine_tune_helps:
        # Little data fine-tunes the top block at most; much data that is far from ImageNet can train more.
        unfreeze = 3 if (cell["data"] == "much" and cell["similarity"] == "different") else 1
        commands.append(
            f"bottleneck fine-tune RUN --unfreeze {unfreeze}    # RUN: the folder fit-head printed"
        )
    commands.append("bottleneck export RUN --format onnx")
    return commands


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
    """Measure which transfer strategy suits ``source`` on a stratified pilot and recommend the next commands.

    Extracts ``layer="blocks"`` of ``backbone`` (default: the default backbone) and the ``pixels`` baseline on at
    most ``per_class`` train images per class (the source's test split, else a held-out fifth of each class,
    is scored), then fits logistic regressions: pixels, the top layer, each block alone, the greedy layer set
    (chosen on val), and with ``fine_tune`` a short fine-tune of the top block from the best frozen head. Writes
    advice.md, advice.json and layers.png to ``out`` (default ``runs_dir/advise-<source>-<backbone>``). The
    caches are keyed like any other: asking again, or ``compare`` on them, is a cache hit.
    """
    from bottleneck.config import ExtractConfig
    from bottleneck.data import open_source
    from bottleneck.inference.runner import extract
    from bottleneck.runs.compare import baseline_cache
    from bottleneck.runs.layers import greedy_layers, score_layer_sets

    t0 = time.perf_counter()
    backbone = backbone or ExtractConfig().backbone
    with open_source(source) as src:
        train_per_class = check_source(src.manifest, per_class, notify)
        has_val = "val" in src.manifest.splits()
    pilot = {"per_class": per_class, "seed": seed, "holdout": PILOT_HOLDOUT}
    options = {"pilot": pilot, "seed": seed, "val_fraction": None if has_val else PILOT_VAL}
    blocks = extract(
        source,
        cache_dir=cache_dir,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        layer="blocks",
        engine=engine,
        progress=progress,
        notify=notify,
        **options,
    ).cache
    pixels, _ = baseline_cache(blocks, progress=progress, notify=notify)
    names = [n for n, _, _ in blocks.columns]
    scored = score_layer_sets(blocks, [[n] for n in names], seed=seed, progress=progress)
    rows = []
    if pixels is not None:
        p = score_layer_sets(pixels, [[c for c, _, _ in pixels.columns]], seed=seed)[0]
        rows.append({"name": "pixels (baseline)", "kind": "pixels", "depth": None, **p})
    for depth, r in enumerate(scored):
        kind = "top" if depth == len(scored) - 1 else "block"
        rows.append(
            {"name": "top layer" if kind == "top" else r["layers"][0], "kind": kind, "depth": depth, **r}
        )
    search = greedy_layers(blocks, seed=seed, progress=progress)
    greedy = score_layer_sets(blocks, [list(search.layers)], seed=seed)[0]
    rows.append({"name": "greedy set", "kind": "greedy", "depth": None, **greedy})
    cell = _cell(rows, train_per_class)
    frozen = [r for r in rows if r["kind"] in ("top", "greedy")]
    best = max(frozen, key=lambda r: (r["val_accuracy"], r["kind"] == "top"))  # ties go to the simpler one
    top_layers = tuple(blocks.columns[-1][:1])
    layers = () if best["kind"] == "top" else tuple(best["layers"])
    notes = list(search.notes)
    tuned = None
    if fine_tune:
        tuned = _short_fine_tune(blocks, best, seed, runs_dir, progress, notify, notes)
        if tuned is not None:
            rows.append(tuned)
    fine_tune_helps = tuned is not None and tuned["val_accuracy"] >= best["val_accuracy"] + MID_LEVEL_GAIN
    recommendation = {
        "name": "top layer" if not layers else f"layers {','.join(layers)}",
        "layers": list(layers or top_layers),
        "head": "logreg",
        "val_accuracy": best["val_accuracy"],
        "test_accuracy": best.get("test_accuracy"),
        "fine_tune": fine_tune_helps,
    }
    pix = next((r for r in rows if r["kind"] == "pixels"), None)
    if pix is not None and pix["val_accuracy"] >= best["val_accuracy"]:
        notes.append(
            f"The raw pixels ({pix['val_accuracy']:.4f} val) score at least as well as the best frozen "
            f"{backbone} features ({best['val_accuracy']:.4f}): the backbone is not helping here. Try another "
            "backbone, fine-tuning most of the network, or a model trained from scratch."
        )
    advice = Advice(
        source=str(Path(source)),
        backbone=backbone,
        per_class=per_class,
        pilot={s: blocks.n(s) for s in ("train", "val", "test") if s in blocks.splits},
        train_per_class=train_per_class,
        rows=rows,
        search=search.to_json(),
        cell=cell,
        recommendation=recommendation,
        commands=_commands(str(source), backbone, image_size, layers, cell, fine_tune_helps),
        notes=notes,
        caches={"blocks": str(blocks.path), "pixels": str(pixels.path) if pixels is not None else None},
    )
    advice.seconds = round(time.perf_counter() - t0, 3)
    stem = Path(str(source).rstrip("/")).stem or "source"
    advice.save(Path(out) if out is not None else Path(runs_dir) / f"advise-{stem}-{backbone}")
    return advice


def _short_fine_tune(blocks, best, seed, runs_dir, progress, notify, notes) -> dict | None:
    """A few epochs of the top block from the best frozen head; a row like the others, or None if it cannot run."""
    from bottleneck.errors import BottleneckError
    from bottleneck.runs.fit import fit_head
    from bottleneck.tuning import fine_tune

    view = blocks.select(best["layers"])
    run = fit_head(view, "logreg", seed=seed, save=False)
    t0 = time.perf_counter()
    try:
        tuned = fine_tune(
            run, unfreeze=1, epochs=FINE_TUNE_EPOCHS, seed=seed, save=False, progress=progress, notify=notify
        )
    except BottleneckError as exc:
        notes.append(f"The short fine-tune did not run: {exc}")
        return None
    m = tuned.summary["metrics"]
    return {
        "name": f"fine-tune top block ({FINE_TUNE_EPOCHS} epochs)",
        "kind": "fine-tune",
        "depth": None,
        "layers": list(best["layers"]),
        "dims": best["dims"],
        "val_accuracy": m["val"]["accuracy"],
        "test_accuracy": m.get("test", {}).get("accuracy"),
        "fit_seconds": round(time.perf_counter() - t0, 3),
    }
