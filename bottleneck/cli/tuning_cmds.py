"""`bottleneck fine-tune` and `bottleneck export`."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import force_option, print_json, user_errors
from bottleneck.cli.progress import progress_bar

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

EXPORT_HELP = """Write a run (frozen head or fine-tuned) as one model file: uint8 images N x S x S x 3 in, class
probabilities out, preprocessing inside, class names stored with it.

Formats: keras (.keras, loads with plain keras.saving.load_model), onnx (onnxruntime), savedmodel
(tf.saved_model.load, signature serving_default), tflite. FILE.json beside every file holds the class names
(a JSON list, in output order), the image size and resize policy. The file is read back fresh and compared
with `bottleneck predict` on sample images of the source before it is reported; the difference is printed
and stored in FILE.json too. `bottleneck predict FILE IMAGES` uses the file itself.

Examples:

  bottleneck export runs/efficientnet_lite0-3f9a2c1d-logreg

  bottleneck export runs/efficientnet_lite0-3f9a2c1d-logreg-fine-tuned --format onnx --out model.onnx
"""


def _h(name: str, text: str) -> str:
    """Help text with the recipe's default (read from TuneSettings, the one place defaults live)."""
    from bottleneck.tuning.recipe import TuneSettings

    default = getattr(TuneSettings(), name)
    return text if default is None else f"{text} [default: {default}]"


def register(app: typer.Typer) -> None:
    @app.command("fine-tune", help=FINE_TUNE_HELP)
    @user_errors
    def fine_tune_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder made by `bottleneck fit-head`."),
        unfreeze: str = typer.Option(None, help=_h("unfreeze", "Top N blocks to train, or 'all'.")),
        unfreeze_from: str = typer.Option(
            None, help="Train this layer and every layer after it (any model)."
        ),
        optimizer: str = typer.Option(None, help=_h("optimizer", "adamw | adam | sgd.")),
        lr: float = typer.Option(None, help=_h("lr", "Peak learning rate of the head.")),
        lr_decay: float = typer.Option(
            None, help=_h("lr_decay", "Each block below learns at this x the one above.")
        ),
        momentum: float = typer.Option(None, help=_h("momentum", "SGD momentum.")),
        weight_decay: float = typer.Option(
            None, help=_h("weight_decay", "Decoupled weight decay (adamw, sgd).")
        ),
        schedule: str = typer.Option(
            None, help=_h("schedule", "cosine | onecycle | constant (after --warmup).")
        ),
        warmup: float = typer.Option(None, help=_h("warmup", "Epochs of linear warm-up.")),
        label_smoothing: float = typer.Option(
            None, help=_h("label_smoothing", "Label smoothing of the loss.")
        ),
        gradual: bool = typer.Option(
            None, "--gradual/--no-gradual", help=_h("gradual", "One block more per epoch.")
        ),
        train_bn: bool = typer.Option(
            None, "--train-bn/--no-train-bn", help=_h("train_bn", "Train BatchNorm.")
        ),
        epochs: int = typer.Option(None, help=_h("epochs", "Maximum epochs.")),
        batch_size: int = typer.Option(None, help=_h("batch_size", "Images per step.")),
        patience: int = typer.Option(
            None,
            help=_h(
                "patience", "Epochs without a new lowest val loss (the start's included) before stopping."
            ),
        ),
        class_weight: str = typer.Option(None, help="balanced: weight classes by inverse frequency."),
        seed: int = typer.Option(
            None, help=_h("seed", "Seed of batch order, augmentation, views, held-out rows.")
        ),
        augment: str = typer.Option(
            None, help="Comma-separated: flip, crop, rotate, zoom, contrast (train only)."
        ),
        views: int = typer.Option(
            None,
            help=_h(
                "views", "Augmented views of each train image, cached (default: 4 where the cut allows)."
            ),
        ),
        plain_view: bool = typer.Option(
            None,
            "--plain-view/--no-plain-view",
            help=_h("plain_view", "With --views: the plain image is one of the views drawn."),
        ),
        prefix_cache: str = typer.Option(
            None, help=_h("prefix_cache", "auto | off: train the top from cache.")
        ),
        val_fraction: float = typer.Option(
            None, help=_h("val_fraction", "Held out of train without a val split.")
        ),
        source: Path = typer.Option(None, help="Where the cache's images are now, if they moved."),
        cache_dir: Path = typer.Option(
            None, help="Where cached activations go (default: beside the run's cache)."
        ),
        out: Path = typer.Option(None, "--out", help="Run folder (default: RUNS_DIR/<run>-fine-tuned)."),
        runs_dir: Path = typer.Option(Path("runs"), help="Where run folders go when --out is not given."),
        force: bool = force_option(),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        passed = dict(locals())  # the options as given, before the names below join them
        from bottleneck.tuning import TuneSettings, fine_tune

        # Every option named like a TuneSettings field is that setting; None: not given (the recipe's default).
        given = {k: v for k, v in passed.items() if k in TuneSettings.names() and v is not None}
        if "unfreeze" in given:
            given["unfreeze"] = _count(given["unfreeze"])
        notes = (lambda line: None) if quiet or json_out else (lambda line: typer.echo(line, err=True))
        with progress_bar("img", quiet) as bar:
            run = fine_tune(
                run_dir,
                source=source,
                cache_dir=cache_dir,
                out=out,
                runs_dir=runs_dir,
                force=force,
                progress=bar,
                notify=notes,
                **given,
            )
        s = run.summary
        if json_out:
            keys = (
                "path",
                "params",
                "unfrozen",
                "selection",
                "mode",
                "epoch_seconds",
                "views",
                "start_check",
            )
            print_json(
                {k: s[k] for k in keys} | {"metrics": s["metrics"], "frozen_metrics": s["frozen_metrics"]}
            )
            return
        if not quiet:
            for split, m in s["metrics"].items():
                before = s["frozen_metrics"].get(split, {}).get("accuracy")
                was = f" (frozen head {before:.4f})" if before is not None else ""
                typer.echo(f"{split} accuracy {m['accuracy']:.4f}{was}", err=True)
        typer.echo(s["path"])

    @app.command("export", help=EXPORT_HELP)
    @user_errors
    def export_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder (fit-head or fine-tune)."),
        format: str = typer.Option("keras", "--format", help="keras | onnx | savedmodel | tflite."),  # noqa: A002
        out: Path = typer.Option(None, "--out", help="Output file (default: RUN/export/model.<ext>)."),
        force: bool = force_option(),
        source: Path = typer.Option(None, help="Where the run's images are now, if they moved."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.export import export_run

        record = export_run(run_dir, out, format=format, force=force, source=source)
        if json_out:
            print_json(record)
            return
        for aside in record.get("moved_aside", []):
            typer.echo(f"moved the old {aside.split('.replaced-')[0]} aside to {aside}", err=True)
        v = record["verification"]
        typer.echo(
            f"verified on {v['images']} images: max difference {v['max_difference']:.2g} from `bottleneck predict`",
            err=True,
        )
        typer.echo(record["path"])


def _count(text: str):
    return int(text) if text.strip().isdigit() else text
