"""`bottleneck inspect`: duplicates, leaks, label errors and a map of a cache, as CSVs, JSON and one page."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import force_option, print_json, say, user_errors
from bottleneck.cli.progress import progress_bar

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


def register(app: typer.Typer) -> None:
    from bottleneck.inspection.duplicates import DEFAULT_THRESHOLD, NEIGHBOURS

    @app.command("inspect", help=INSPECT_HELP)
    @user_errors
    def inspect_cmd(
        cache: str = typer.Argument(..., help="A cache folder made by `bottleneck extract` (or its URL)."),
        run: Path = typer.Option(None, "--run", help="A run folder: show its predictions and mistakes."),
        split: str = typer.Option(
            None, help="Split of the predictions and confusion matrix (default: test)."
        ),
        out: Path = typer.Option(None, "--out", help="Output folder (default: runs/inspect-<cache>)."),
        source: Path = typer.Option(None, help="Where the cache's source images are now, if they moved."),
        threshold: float = typer.Option(
            DEFAULT_THRESHOLD,
            help="Cosine similarity, (0, 1], of near duplicates by the features alone; with the pixel check, pairs "
            "this close are always compared.",
        ),
        pixel_check: bool = typer.Option(
            True, "--pixel-check/--no-pixel-check", help="Confirm near duplicates by comparing their images."
        ),
        neighbours: int = typer.Option(
            NEIGHBOURS, help="Nearest neighbours of each image compared by pixels."
        ),
        label_errors: bool = typer.Option(
            True, "--label-errors/--no-label-errors", help="Find likely label errors."
        ),
        label_method: str = typer.Option(
            "estimate", help="estimate (the estimated number of wrong labels) | cleanlab (needs cleanlab)."
        ),
        folds: int = typer.Option(5, help="Folds of the out-of-fold logistic regression."),
        map_method: str = typer.Option("auto", help="auto (UMAP where installed, else PCA) | umap | pca."),
        page: bool = typer.Option(True, "--page/--no-page", help="Write index.html with thumbnails."),
        force: bool = force_option(),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.inspection import inspect_cache

        with progress_bar(quiet=quiet) as bar:
            result = inspect_cache(
                cache,
                run=run,
                split=split,
                out=out,
                source=source,
                threshold=threshold,
                pixel_check=pixel_check,
                neighbours=neighbours,
                label_errors=label_errors,
                label_method=label_method,
                folds=folds,
                map_method=map_method,
                page=page,
                force=force,
                progress=bar,
                notify=say,
            )
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
        typer.echo(str(result.path / "index.html") if page else str(result.path))
