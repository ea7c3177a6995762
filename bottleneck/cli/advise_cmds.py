"""`bottleneck advise`: which transfer strategy suits a dataset, measured on a pilot sample."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import force_option, print_json, say, user_errors
from bottleneck.cli.progress import progress_bar

ADVISE_HELP = """Measure which configuration suits a dataset, on a small stratified pilot, and print the commands
that build it on the whole data.

One backbone pass over at most --per-class train images per class (default 100) reads every block's output
and the family's wide points (--layer blocks,wide); the raw pixels are extracted beside it. Logistic
regressions score on val every configuration those caches build: the pixels, the top layer, each layer alone,
the greedy layer set and the presets (multiscale where measured, all block outputs, all wide points), each
with its val accuracy and log loss and their standard errors. The choice: the lowest val log loss, unless a
cheaper configuration (no backbone, or fewer dims) is within one standard error of it. The test split (or a
held-out fifth of each class) is scored after the choice. A short fine-tune (fine-tune's default recipe; skip
with --no-fine-tune) is recommended only when it lowers the val log loss by more than a standard error. The
printed commands run as they are in a POSIX shell. Writes advice.md, advice.json and layers.png; the caches
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
        force: bool = force_option(),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.runs.advise import advise

        with progress_bar(None, quiet) as bar:
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
                force=force,
                progress=bar,
                notify=say,
            )
        if json_out:
            print_json(advice.to_json())
            return
        typer.echo(advice.markdown(), nl=False)
        if not quiet:
            typer.echo(f"saved {', '.join(advice.paths.values())}", err=True)
