"""`bottleneck inspect`: duplicates, leaks, label errors and a map of a cache, as CSVs, JSON and one page."""

from __future__ import annotations

import typer

from bottleneck import inspection  # a lazy package: the heads (scikit-learn) load when the command runs
from bottleneck.cli.common import print_json, say
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.inspection.options import INSPECT
from bottleneck.job_settings import CACHE_URL_ARG

INSPECT_HELP = """Find exact and near duplicates, cross-split leaks and likely label errors in a cache, from its
features alone (no backbone pass), and write CSVs, summary.json and one offline page (index.html).

Near duplicates: each image's --neighbours nearest in the features (and every pair of cosine >= --threshold)
compared by their pixels (8 x 8 grey copies); with --no-pixel-check, or when the source images cannot be read,
cosine >= --threshold of the features alone. Label errors: the images least likely under their own label
(out-of-fold probabilities of a --folds-fold logistic regression), as many as the estimated number of wrong
labels; --label-method cleanlab uses cleanlab's find_label_issues instead (needs
`pip install 'bottleneck-features[inspect]'`); --no-label-errors skips them. With --run, the page shows that run's
predictions on --split (mistakes, confusion matrix); without, the out-of-fold predictions. Thumbnails are
decoded from the cache's source (--source PATH if the images moved) and written beside the page.
Every CSV row has the image id: feed the id column back as an exclusion list.

Examples:

  bottleneck inspect cache/efficientnet_lite0-3f9a2c1d

  bottleneck inspect cache/efficientnet_lite0-3f9a2c1d --run runs/efficientnet_lite0-3f9a2c1d-logreg --json

  bottleneck inspect cache/efficientnet_lite0-3f9a2c1d --source /data/moved/photos --out runs/check
"""


@command(
    app,
    "inspect",
    INSPECT_HELP,
    CACHE_URL_ARG,
    INSPECT,
    JSON.but(help="Print the summary as JSON."),
    QUIET,
)
def inspect(cache: str, json_out: bool, quiet: bool, **options) -> None:
    with progress_bar(quiet=quiet) as bar:
        result = inspection.inspect_cache(cache, progress=bar, notify=say, **options)
    s = result.summary
    if json_out:
        print_json(s)
        return
    if not quiet:
        c = s["counts"]
        parts = [
            f"{c['images']} images",
            f"{c['exact_duplicate_pairs']} exact and {c['near_duplicate_pairs']} near duplicate pairs",
            f"{c['leak_pairs']} across splits",
        ]
        if "label_issues" in c:
            parts.append(f"{c['label_issues']} suspected label errors")
        if "mistakes" in c:
            parts.append(f"{c['mistakes']} mistakes on {s['predictions']['split']}")
        typer.echo(", ".join(parts), err=True)
    typer.echo(str(result.path / "index.html") if options["page"] else str(result.path))
