"""`bottleneck classify`: ImageNet top-k with class names, to check weights and preprocessing by eye."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json, user_errors

CLASSIFY_HELP = """Run the full pretrained network (with its ImageNet classifier) and print the top classes of each image.

Works offline for the EfficientNet-Lite backbones. A cat photo should come out as a cat class, an espresso
as espresso: if not, the weights or the preprocessing are wrong.

Examples:

  bottleneck classify cat.jpg coffee.png

  bottleneck classify photos/*.jpg --backbone efficientnet_lite2 --top 3 --json

  bottleneck classify cat.jpg --backbone alexnet --weights bvlc_alexnet.npy
"""


def register(app: typer.Typer) -> None:
    @app.command("classify", help=CLASSIFY_HELP)
    @user_errors
    def classify_cmd(
        images: list[Path] = typer.Argument(..., help="Image files."),
        backbone: str = typer.Option(
            "efficientnet_lite0",
            help="Registry name (see `bottleneck backbones`) or a saved Keras classifier.",
        ),
        top: int = typer.Option(5, help="How many classes to show per image."),
        weights: str = typer.Option("imagenet", help="imagenet | none | PATH to a local weights file."),
        image_size: int = typer.Option(None, help="Square input side in pixels (default: the backbone's)."),
        resize: str = typer.Option(
            "squash", help="squash (ignore aspect) | crop (centre) | pad (letterbox)."
        ),
        preprocess: str = typer.Option(
            None, help="For a model-file backbone: caffe | torch | tf | 127 | none."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.runs.classify import classify

        results = classify(
            images,
            backbone=backbone,
            top=top,
            weights=weights,
            image_size=image_size,
            resize=resize,
            preprocess=preprocess,
        )
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
