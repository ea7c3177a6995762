"""`bottleneck advise`: which transfer strategy suits a dataset, measured on a pilot sample."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json, user_errors
from bottleneck.cli.progress import ProgressBar

ADVISE_HELP = """Measure which transfer strategy suits a dataset, on a small stratified pilot, and print what to run.

One backbone pass over at most --per-class train images per class (default 100) gives the output of every
block (--layer blocks); the raw pixels are the baseline. Logistic regressions score the pixels, the top
layer, each block alone and the greedy layer set (chosen on val; the test split, or a held-out fifth of
each class, is only scored), then a short fine-tune of the top block (--no-fine-tune to skip). The advice
names the cell of the classic table (little or much data, similar to ImageNet or not, from these
measurements), the recommended configuration, and the commands to run it on the whole dataset. Writes
advice.md, advice.json and layers.png (accuracy by layer depth, the pixel baseline as a line); the caches
are reused by a later advise or compare.

Examples:

  bottleneck advise data/signs

  bottleneck advise data/fashion --per-class 300 --backbone efficientnet_lite0 --json
"""


def register(app: typer.Typer) -> None:
    @app.command("advise", help=ADVISE_HELP)
    @user_errors
    def advise_cmd(
        source: Path = typer.Argument(
            ..., help="Images: class folders, split folders, .h5, .npz, IDX or CSV."
        ),
        backbone: str = typer.Option(None, help="Backbone to measure (default: efficientnet_lite0)."),
        per_class: int = typer.Option(100, help="Pilot train images per class (at most)."),
        image_size: int = typer.Option(None, help="Input side in pixels (default: the backbone's)."),
        weights: str = typer.Option("imagenet", help="imagenet | none | path to a weights file."),
        engine: str = typer.Option("auto", help="auto | tensorflow | onnx."),
        fine_tune: bool = typer.Option(
            True, "--fine-tune/--no-fine-tune", help="Also fine-tune the top block."
        ),
        seed: int = typer.Option(0, help="Seed of the pilot sample and the heads."),
        cache_dir: Path = typer.Option(Path("cache"), help="Where the pilot caches go."),
        runs_dir: Path = typer.Option(
            Path("runs"), help="Where the advice folder goes when --out is not given."
        ),
        out: Path = typer.Option(
            None, "--out", help="Advice folder (default runs/advise-<source>-<backbone>)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.runs.advise import advise

        bar = ProgressBar(unit="it", enabled=None if not quiet else False)
        try:
            advice = advise(
                source,
                backbone=backbone,
                per_class=per_class,
                seed=seed,
                image_size=image_size,
                weights=weights,
                engine=engine,
                fine_tune=fine_tune,
                cache_dir=cache_dir,
                runs_dir=runs_dir,
                out=out,
                progress=bar,
                notify=lambda line: typer.echo(line, err=True),
            )
        finally:
            bar.close()
        if json_out:
            print_json(advice.to_json())
            return
        typer.echo(advice.markdown(), nl=False)
        if not quiet:
            typer.echo(f"saved {', '.join(advice.paths.values())}", err=True)
