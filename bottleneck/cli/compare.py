"""`bottleneck compare`: several heads on one or more caches, one table."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck import (  # lazy packages: scikit-learn loads when a command fits, not at start-up
    inspection,
    runs,
)
from bottleneck.cli.common import print_json, say
from bottleneck.cli.fit import training_params
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.errors import BottleneckError
from bottleneck.job_settings import COMPARE
from bottleneck.runs.params import parse_params

COMPARE_HELP = """Fit several heads on one or more caches (e.g. one per backbone) and print one table.

The table (markdown, also saved with a CSV, a JSON and a plot in --out) has accuracy, balanced accuracy
and fit time per head and cache, on test (val when a cache has no test split). --seeds N (or a list
0,1,2) repeats every fit and reports mean ± std.

Examples:

  bottleneck compare cache/efficientnet_lite0-3f9a2c1d cache/vgg16-0c1d2e3f --heads logreg,linear,mlp

  bottleneck compare cache/efficientnet_lite0-3f9a2c1d --heads linear,mlp --seeds 3 --epochs 20 --param mlp.width=512

A cache extracted with --layer blocks (or several layers) can be scored on subsets of its layers without
extracting again: --layers top --layers block6a_add,top (one row each), or --layer-search greedy, which adds
layers by forward selection on val and prints the path. A logreg row on the raw pixels of the same images
(the `pixels` backbone, extracted once) says whether transfer helps at all; --no-baseline drops it.

  bottleneck compare cache/efficientnet_lite0-3f9a2c1d --heads logreg --layers top --layer-search greedy
"""


def seed_list(text: str) -> list[int]:
    """``--seeds``: a count (3 = 0,1,2) or a list of seeds (0,1,2)."""
    try:
        parts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BottleneckError(
            f"--seeds {text!r} must be a count (3) or a list of integers (0,1,2)."
        ) from None
    if len(parts) == 1 and "," not in text:
        if parts[0] < 1:
            raise BottleneckError(f"--seeds {text} must be at least 1.")
        return list(range(parts[0]))
    if not parts:
        raise BottleneckError("--seeds is empty; pass a count (3) or a list (0,1,2).")
    return parts


@command(app, "compare", COMPARE_HELP, COMPARE, JSON, QUIET)
def compare(
    caches: list[str],
    heads: str,
    seeds: str,
    param: list[str] | None,
    layers: list[str] | None,
    report: bool,
    json_out: bool,
    quiet: bool,
    **options,
) -> None:
    names = [h.strip() for h in heads.split(",") if h.strip()]
    if not names:
        raise BottleneckError("--heads is empty; pass e.g. --heads logreg,linear,mlp.")
    params = training_params(options) | parse_params(param, names)
    with progress_bar("fit", quiet) as bar:
        result = runs.compare(
            caches,
            names,
            seeds=seed_list(seeds),
            params=params,
            layers=layers or None,
            progress=bar,
            notify=say,
            **options,
        )
    if report:
        page = inspection.write_compare_page(
            result,
            caches,
            params=params,
            out=Path(options["out"]) / "report",
            force=options["force"],
            notify=say,
        )
        result.paths["report"] = str(page)
    if json_out:
        print_json(result.to_json())
        return
    typer.echo(result.markdown(), nl=False)
    if not quiet:
        typer.echo(f"saved {', '.join(result.paths.values())}", err=True)
