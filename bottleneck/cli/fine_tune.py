"""`bottleneck fine-tune`: a fit-head run's backbone and head trained as one model on the cache's images."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck import tuning  # a lazy package: Keras and the heads load when the command runs
from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.job_settings import FINE_TUNE_RUN
from bottleneck.settings import RUN_ARG
from bottleneck.tuning.recipe import SETTINGS as RECIPE

FINE_TUNE_HELP = """Fine-tune a fit-head run: its backbone and trained head as one model, the top blocks trained on
the cache's images.

Starts from the run's own head (checked first: the rebuilt model must give the run's predictions on cached
rows within 1e-4), which is epoch 0 of the selection. Each epoch's val loss is measured after one temperature
fitted on val (the start's too): fine-tuning makes a model confident faster than it makes it right, and the
calibrated loss follows test accuracy where the plain one does not. The kept weights are those of the epoch with
the lowest calibrated val loss among epochs at least as accurate on val as the start and better than the start
by more than one standard error of the per-row difference, with its temperature folded into the head; else the
start itself ("kept the start weights"). The default recipe (measured on Fashion-MNIST, digits and faces;
README) unfreezes the top 3 blocks with AdamW at lr 1e-3 for the head, halving per block downwards
(--lr-decay), one epoch of warm-up then cosine, 4 cached augmented views of each train image, no label
smoothing, BatchNorm frozen (--train-bn to train it), early stopping when the val loss has not reached a new
low (the start's included) for --patience epochs.

When one tensor enters the unfrozen top (true at every block boundary of the known families), everything below
it is computed once into keyed float16 caches and each epoch runs only the top: the plain images' activations
(val, test, and train) and K seeded augmented views of each train image (--views K, default 4 there; --augment
names them; default crop,rotate,zoom,contrast), the plain image or one view drawn per image and epoch. --views 0
trains on the plain images only; --views 0 with --augment, or --prefix-cache off, runs the whole network every
epoch.

Prints one line per epoch (seconds, loss, val loss, val accuracy) and a line when it stops early. The run
folder is built in a hidden sibling with a checkpoint after every epoch: after Ctrl-C, the same command
resumes. Images come from the cache's recorded source (--source if they moved). Writes model.keras,
metrics.json (the frozen head's figures beside the new ones), report.md, history.png, confusion.png.

Examples:

  bottleneck fine-tune runs/efficientnet_lite0-3f9a2c1d-logreg

  bottleneck fine-tune runs/efficientnet_lite0-3f9a2c1d-logreg --views 8 --epochs 15

  bottleneck fine-tune runs/resnet50-0c1d2e3f-mlp --unfreeze 2 --optimizer sgd --lr 1e-3 --schedule onecycle

  bottleneck fine-tune runs/my-model-logreg --unfreeze-from conv5 --lr 1e-4
"""

SUMMARY_KEYS = ("path", "params", "unfrozen", "selection", "mode", "epoch_seconds", "views", "start_check")


# Every TuneSettings setting is an option of its own name, "not given" by default (the recipe's default applies).
@command(
    app, "fine-tune", FINE_TUNE_HELP, RUN_ARG, RECIPE, FINE_TUNE_RUN, JSON, QUIET, given_only=RECIPE.names()
)
def fine_tune(run_dir: Path, json_out: bool, quiet: bool, **options) -> None:
    given = {k: v for k, v in options.items() if k not in RECIPE or v is not None}
    notes = (lambda line: None) if quiet or json_out else (lambda line: typer.echo(line, err=True))
    with progress_bar("img", quiet) as bar:
        run = tuning.fine_tune(run_dir, progress=bar, notify=notes, **given)
    s = run.summary
    if json_out:
        print_json(
            {k: s[k] for k in SUMMARY_KEYS} | {"metrics": s["metrics"], "frozen_metrics": s["frozen_metrics"]}
        )
        return
    if not quiet:
        for split, m in s["metrics"].items():
            before = s["frozen_metrics"].get(split, {}).get("accuracy")
            was = f" (frozen head {before:.4f})" if before is not None else ""
            typer.echo(f"{split} accuracy {m['accuracy']:.4f}{was}", err=True)
    typer.echo(s["path"])
