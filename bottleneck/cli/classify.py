"""`bottleneck classify`: ImageNet top-k with class names, to check weights and preprocessing by eye."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, command
from bottleneck.cli.root import app
from bottleneck.job_settings import CLASSIFY
from bottleneck.runs.imagenet_top_k import classify as run_classify

CLASSIFY_HELP = """Run the full pretrained network (with its ImageNet classifier) and print the top classes of each image.

Works offline for the EfficientNet-Lite backbones. A cat photo should come out as a cat class, an espresso
as espresso: if not, the weights or the preprocessing are wrong.

Examples:

  bottleneck classify cat.jpg coffee.png

  bottleneck classify photos/*.jpg --backbone efficientnet_lite2 --top 3 --json

  bottleneck classify cat.jpg --backbone alexnet --weights bvlc_alexnet.npy
"""


@command(app, "classify", CLASSIFY_HELP, CLASSIFY, JSON)
def classify(images: list[Path], json_out: bool, **options) -> None:
    results = run_classify(images, **options)
    if json_out:
        print_json(
            [
                {
                    "image": str(path),
                    "top": [{"class": i, "name": name, "prob": round(p, 6)} for i, name, p in preds],
                }
                for path, preds in zip(images, results, strict=True)
            ]
        )
        return
    for path, preds in zip(images, results, strict=True):
        typer.echo(str(path))
        for rank, (i, name, p) in enumerate(preds, 1):
            typer.echo(f"  {rank}. {p:6.1%}  {i:4d}  {name}")
