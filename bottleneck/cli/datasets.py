"""`bottleneck datasets export fashion-mnist`: example datasets written as image folders."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, QUIET, command, group
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.data.datasets import export_fashion_mnist
from bottleneck.job_settings import FASHION_MNIST

FASHION_MNIST_HELP = """Write Fashion-MNIST as DIR/{train,test}/<class>/<index>.png (28x28 grayscale PNGs).

Reads Debian's dataset-fashion-mnist files (apt-get install dataset-fashion-mnist) when installed, else
downloads the official files (needs a network). --per-class N keeps N images per class and split.

Example:

  bottleneck datasets export fashion-mnist data/fashion --per-class 100
"""

datasets_app = group("Example datasets as image folders.")
export_app = group("Write a dataset as split/class image folders.")
datasets_app.add_typer(export_app, name="export")
app.add_typer(datasets_app, name="datasets")


@command(export_app, "fashion-mnist", FASHION_MNIST_HELP, FASHION_MNIST, JSON, QUIET)
def fashion_mnist(out_dir: Path, json_out: bool, quiet: bool, **options) -> None:
    with progress_bar(quiet=quiet) as bar:
        result = export_fashion_mnist(out_dir, progress=bar, **options)
    if json_out:
        print_json(result)
        return
    if not quiet:
        counts = ", ".join(f"{k} {v}" for k, v in result["splits"].items())
        verb = "already exported" if result["hit"] else "wrote"
        typer.echo(f"{verb} {counts} images from {result['source']}", err=True)
    typer.echo(result["path"])
