"""What `advise` measured and recommends: the Advice report (markdown, JSON, plot) and the commands that build
the recommendation on the whole data, as a shell runs them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck._io import write_json_atomic
from bottleneck._ownership import atomic_dir
from bottleneck.report import markdown_table, markdown_text
from bottleneck.report.plots import plot_layers


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

        cell, rec = self.cell, self.recommendation
        tuned = " then fine-tuned" if rec["fine_tune"] else ""
        lines = [
            f"# Advice for {markdown_text(self.source)} with {markdown_text(self.backbone)}",
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

    def save(self, out, *, force: bool = False, notify=None) -> dict:
        """advice.md, advice.json and layers.png (accuracy by layer depth, the other configurations as lines), in
        a folder built aside and renamed when whole; one bottleneck did not write is refused unless ``force``."""

        out = Path(out)
        self.paths = {
            "md": str(out / "advice.md"),
            "json": str(out / "advice.json"),
            "png": str(out / "layers.png"),
        }
        with atomic_dir(out, "advice", force=force, notify=notify) as tmp:
            plot_layers(self.rows, tmp / "layers.png", title=f"{self.backbone} on {Path(self.source).name}")
            (tmp / "advice.md").write_text(self.markdown())
            write_json_atomic(tmp / "advice.json", self.to_json(), indent=2)
        return self.paths


def _similarity(cell: dict) -> str:
    return "similar to ImageNet" if cell["similarity"] == "similar" else "different from ImageNet"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _pm(v, se) -> str:
    return f"{v:.4f}" if se is None else f"{v:.4f} ± {se:.4f}"


def _short(layers) -> str:
    return ",".join(layers) if len(layers) <= 3 else f"{len(layers)} layers"


def stem_of(source) -> str:
    """A short name for a source (its folder or file name) in run and advice folder names."""
    return Path(str(source).rstrip("/")).stem or "source"


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
        for name in ("preprocess", "mean", "std", "channels"):  # an ONNX model file's declared preprocessing
            if names.get(name) is not None:
                extract += f" --{name} {q(str(names[name]))}"
        if rec["layer"]:
            extract += f" --layer {q(rec['layer'])}"
    if str(cache_dir) != "cache":
        extract += f" --cache-dir {q(str(cache_dir))}"
    run = advised_run(source, runs_dir)
    out = [f"CACHE=$({extract})", f'bottleneck fit-head "$CACHE" --head logreg --out {q(str(run))}']
    if rec["fine_tune"]:
        tuned = Path(f"{run}-fine-tuned")
        options, rest = _recipe_options(rec["recipe"])
        line = f"bottleneck fine-tune {q(str(run))}{options} --out {q(str(tuned))}"
        out.append(line + (f"    # and {rest}, fine-tune's defaults" if rest else ""))
        run = tuned
    out.append(f"bottleneck export {q(str(run))} --format onnx")
    return out


def advised_run(source, runs_dir="runs") -> Path:
    """The run folder the printed commands fit the recommended head into."""
    return Path(runs_dir) / f"advised-{stem_of(source)}"


# Settings of a fine-tuned run's recipe that `bottleneck fine-tune` takes as options (--name value, --flag /
# --no-flag for the yes/no ones): every field of tuning.recipe.TuneSettings that decides the result. Others a
# recipe may hold are named in a comment after the command, where the CLI's defaults are the library's.
FINE_TUNE_OPTIONS = (
    "unfreeze",
    "unfreeze_from",
    "optimizer",
    "lr",
    "lr_decay",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup",
    "label_smoothing",
    "gradual",
    "train_bn",
    "epochs",
    "batch_size",
    "patience",
    "class_weight",
    "augment",
    "views",
    "plain_view",
    "prefix_cache",
    "val_fraction",
)


def _recipe_options(recipe: dict) -> tuple[str, str]:
    """The fine-tune options that repeat ``recipe`` (a fine-tuned run's params), then the rest as a comment."""
    parts, rest = [], []
    for key, value in recipe.items():
        if key == "seed" or value is None:
            continue
        flag = key.replace("_", "-")
        if key in FINE_TUNE_OPTIONS and isinstance(value, bool):
            parts.append(f"--{flag}" if value else f"--no-{flag}")
        elif key in FINE_TUNE_OPTIONS:
            parts.append(f"--{flag} {shlex.quote(str(value))}")
        else:
            rest.append(f"{key}={value}")
    return "".join(" " + p for p in parts), ", ".join(rest)
