"""`bottleneck fit-head` and `evaluate`: train a head on a cache into a run folder, score a run on a cache."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck import (  # lazy packages: scikit-learn loads when a command fits, not at start-up
    inspection,
    runs,
)
from bottleneck._ownership import check_out
from bottleneck.cache.reader import open_cache
from bottleneck.cli.common import print_json, say
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.job_settings import EVALUATE, FIT, HEAD_TRAINING
from bottleneck.report import markdown_table
from bottleneck.runs.params import parse_params
from bottleneck.settings import CACHE_ARG

FIT_HELP = """Train a head on a cache's train split, select on val, report val and test metrics, save a run folder.

The run folder holds head/ (the saved head), metrics.json, report.md, history.png and confusion.png;
its path is printed last. Heads: logreg (C chosen on val), linear, mlp, sigmoid (2 classes), pool-dense
(spatial caches from --pooling none).

Examples:

  bottleneck fit-head cache/efficientnet_lite0-3f9a2c1d --head logreg

  bottleneck fit-head cache/vgg16-0c1d2e3f --head mlp --epochs 30 --class-weight balanced --param width=512

  bottleneck fit-head cache/vgg16-0c1d2e3f --head pool-dense --out runs/signs --json
"""

EVALUATE_HELP = """Score a saved run's head on a split of a cache made with the same backbone settings and classes.

Example:

  bottleneck evaluate runs/efficientnet_lite0-3f9a2c1d-logreg cache/efficientnet_lite0-77aa0b1c --split test
"""


def training_params(options: dict) -> dict:
    """The Keras heads' training options that were given (popped from ``options``), as head parameters."""
    given = {name: options.pop(name) for name in HEAD_TRAINING.names()}
    return {k: v for k, v in given.items() if v is not None}


def metric_line(metrics: dict) -> str:
    return ", ".join(
        f"{split} accuracy {m['accuracy']:.4f} (balanced {m['balanced_accuracy']:.4f})"
        for split, m in metrics.items()
    )


def _run_page(run, force: bool) -> Path:
    """RUN/report/index.html: the run on its cache's test split (val, else train, when there is none)."""
    c = open_cache(run.summary["cache"]["path"])
    split = next(s for s in ("test", "val", "train") if s in c.splits)
    return inspection.write_run_page(run, c, split=split, force=force, notify=say)


@command(app, "fit-head", FIT_HELP, CACHE_ARG, FIT, JSON, QUIET)
def fit(cache: str, head: str, param: list[str] | None, report: bool, json_out: bool, quiet: bool, **options):
    params = training_params(options) | parse_params(param, head=head)
    with progress_bar(None, quiet) as bar:  # "s/epoch", "C sweep/s": each stage's own unit
        run = runs.fit_head(cache, head, params=params, progress=bar, notify=say, **options)
    s = run.summary
    page = _run_page(run, options["force"]) if report else None
    if json_out:
        print_json(
            {k: s[k] for k in ("head", "path", "fit_seconds", "metrics")}
            | {"selection": s["selection"]}
            | ({"report": str(page)} if page else {})
        )
        return
    if page and not quiet:
        typer.echo(f"page: {page}", err=True)
    if not quiet:
        sel = ", ".join(f"{k} {v}" for k, v in s["selection"].items())
        typer.echo(
            f"{s['head']} fitted in {s['fit_seconds']:.2f} s ({sel}): {metric_line(s['metrics'])}", err=True
        )
    typer.echo(s["path"])


@command(app, "evaluate", EVALUATE_HELP, EVALUATE, JSON)
def evaluate(run_dir: Path, cache: str, split: str, report: Path | None, force: bool, json_out: bool) -> None:
    if report is not None:
        check_out(report, force=force, param="report")  # before scoring, not after
    result = runs.evaluate_run(run_dir, cache, split=split)
    if report is not None:
        page = inspection.write_run_page(run_dir, cache, split=split, out=report, force=force, notify=say)
        result["report"] = str(page)
        typer.echo(f"page: {result['report']}", err=True)
    if json_out:
        print_json(result)
        return
    m = result["metrics"][split]
    typer.echo(f"{result['head']} head from {run_dir} on {cache} ({split}, {m['n']} rows)")
    rows = [["accuracy", m["accuracy"]], ["balanced accuracy", m["balanced_accuracy"]]]
    if "top5_accuracy" in m:
        rows.append(["top-5 accuracy", m["top5_accuracy"]])
    rows.append(["log loss", m["log_loss"]])
    typer.echo(markdown_table(["metric", "value"], rows), nl=False)
