"""`bottleneck advise`: which transfer strategy suits a dataset, measured on a pilot sample."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json, say
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.job_settings import ADVISE, SOURCE_ARG

ADVISE_HELP = """Measure which configuration suits a dataset, on a small stratified pilot, and print the commands
that build it on the whole data.

One backbone pass over at most --per-class train images per class (default 100) reads every block's output
and the family's wide points (--layer blocks,wide); the raw pixels are extracted beside it. Logistic
regressions score on val every configuration those caches build: the pixels, the top layer, each layer alone,
the greedy layer set and the presets (multiscale where measured, all block outputs, all wide points), each
with its val accuracy and log loss and their standard errors. The choice: the lowest val log loss, unless a
cheaper configuration (no backbone, or fewer dims) is within one standard error of it. The test split (or a
held-out fifth of each class) is scored after the choice. On a pilot of 500 or more train images per class
(--per-class 500), or with --fine-tune, a short fine-tune (fine-tune's default recipe on the plain images,
--views 0) is recommended only when it lowers the val log loss by more than a standard error; on smaller
pilots it kept its start on every dataset measured, so by default it does not run there. The printed commands
run as they are in a POSIX shell. Writes advice.md, advice.json and layers.png; the caches
are reused by a later advise or compare.

Examples:

  bottleneck advise data/signs

  bottleneck advise data/fashion --per-class 300 --backbone efficientnet_lite0 --json
"""


SOURCE = SOURCE_ARG.but(help="Images: class folders, split folders, .h5, .npz, IDX or CSV.", type=Path)


@command(app, "advise", ADVISE_HELP, SOURCE, ADVISE, JSON, QUIET)
def advise(source: Path, json_out: bool, quiet: bool, **options) -> None:
    with progress_bar(None, quiet) as bar:
        from bottleneck.runs.advise import advise as run_advise  # the job loads when it runs: a fast start

        advice = run_advise(source, progress=bar, notify=say, **options)
    if json_out:
        print_json(advice.to_json())
        return
    typer.echo(advice.markdown(), nl=False)
    if not quiet:
        typer.echo(f"saved {', '.join(advice.paths.values())}", err=True)
