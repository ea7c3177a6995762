"""`bottleneck predict`: class names and probabilities of new images with a saved run's head."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck import runs  # a lazy package: the heads (scikit-learn) load when the command runs
from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, command
from bottleneck.cli.root import app
from bottleneck.job_settings import PREDICT
from bottleneck.settings import RUN_ARG, Setting

PREDICT_HELP = """Class names and probabilities of new images with a saved run's head.

Images go through the same backbone, weights, size, resize policy, layer, pooling and preprocessing as the
cache the head was trained on. Folders are searched for images recursively.

Examples:

  bottleneck predict runs/efficientnet_lite0-3f9a2c1d-logreg photo.jpg

  bottleneck predict runs/efficientnet_lite0-3f9a2c1d-mlp new_photos/ --top 3 --json
"""

IMAGES_ARG = Setting("images", ..., help="Image files or folders.", argument=True, type=list[Path])


@command(app, "predict", PREDICT_HELP, RUN_ARG, IMAGES_ARG, PREDICT, JSON)
def predict(run_dir: Path, images: list[Path], top: int, batch_size: int, json_out: bool) -> None:
    results = runs.predict_images(run_dir, images, top=top, batch_size=batch_size)
    if json_out:
        print_json(results)
        return
    for r in results:
        best = "  ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"])
        typer.echo(f"{r['image']}\t{best}")
