"""`bottleneck similar`: a cache's nearest images to a query image or a cached image's id."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck import inspection  # a lazy package: the backbone (TensorFlow) loads when the command runs
from bottleneck.cli.common import print_json, say
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.job_settings import SIMILAR

SIMILAR_HELP = """The nearest images of a cache to a query by cosine of their features: exact, every row compared
block by block (no index to build). The query is an image file, embedded with the cache's own backbone settings,
or --id ID of an image in the cache (it comes back first, cosine 1). One line per image: cosine, split, class,
id; --json prints them as a list. --report FOLDER also writes an offline page of their thumbnails.

Examples:

  bottleneck similar cache/efficientnet_lite0-3f9a2c1d --id train/cat/001.jpg --k 5

  bottleneck similar cache/efficientnet_lite0-3f9a2c1d photo.jpg --split train --report runs/near-photo
"""


@command(app, "similar", SIMILAR_HELP, SIMILAR, JSON, QUIET)
def similar(
    cache: str,
    image: Path | None,
    id: str | None,
    k: int,
    split: str | None,
    cache_dir: Path,
    report: Path | None,
    source: Path | None,
    force: bool,
    json_out: bool,
    quiet: bool,
) -> None:
    with progress_bar("row", quiet or json_out) as bar:
        found = inspection.find_similar(
            cache, image, id=id, k=k, split=split, cache_dir=cache_dir, report=report, source=source,
            force=force, progress=bar, notify=say,
        )  # fmt: skip
    if json_out:
        print_json(found)
    else:
        for r in found:
            typer.echo(f"{r['cosine']:.4f}  {r['split']:<6} {r['class_name']:<16} {r['id']}")
    if report is not None and not quiet:
        say(f"page: {report / 'index.html'}")
