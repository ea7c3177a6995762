"""`bottleneck fine-tune` and `bottleneck export`."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json, user_errors
from bottleneck.cli.progress import ProgressBar

FINE_TUNE_HELP = """Fine-tune a fit-head run: its backbone and trained head as one model, the top blocks trained on
the cache's images.

Starts from the run's own head (checked first: the rebuilt model must give the run's predictions on cached
rows within 1e-4), unfreezes the top N blocks (--unfreeze N; block names are known for EfficientNet/Lite,
ResNet, VGG, MobileNet, Xception, Inception, DenseNet, ConvNeXt, AlexNet), keeps BatchNorm in inference
mode, and trains with SGD (momentum 0.9, lr 1e-4) and early stopping on val loss, the best weights restored.
Images come from the cache's recorded source through the same decode and resize as extraction; --source if
they moved. Writes a run folder (model.keras, metrics.json with the frozen head's figures beside the new
ones, report.md, history.png, confusion.png) that evaluate, predict and export take.

--prefix-cache auto (default) applies when nothing is augmented and one tensor enters the unfrozen top
(true at every block boundary above): the activations below the cut are computed once into a keyed float16
cache (`--pooling none` of that layer), and each epoch runs only the unfrozen top, several times faster.
With --augment, or --prefix-cache off, every epoch runs the whole network.

Examples:

  bottleneck fine-tune runs/efficientnet_lite0-3f9a2c1d-logreg

  bottleneck fine-tune runs/resnet50-0c1d2e3f-mlp --unfreeze 2 --augment flip,crop --epochs 20

  bottleneck fine-tune runs/my-model-logreg --unfreeze-from conv5 --optimizer adam --lr 1e-5
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


def register(app: typer.Typer) -> None:
    @app.command("fine-tune", help=FINE_TUNE_HELP)
    @user_errors
    def fine_tune_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder made by `bottleneck fit-head`."),
        unfreeze: str = typer.Option("1", help="Top N blocks to train, or 'all'."),
        unfreeze_from: str = typer.Option(
            None, help="Train this layer and every layer after it (any model)."
        ),
        optimizer: str = typer.Option("sgd", help="sgd (momentum 0.9) | adam."),
        lr: float = typer.Option(1e-4, help="Learning rate."),
        epochs: int = typer.Option(10, help="Maximum epochs."),
        batch_size: int = typer.Option(32, help="Images per step."),
        patience: int = typer.Option(3, help="Epochs without a lower val loss before stopping."),
        class_weight: str = typer.Option(None, help="balanced: weight classes by inverse frequency."),
        seed: int = typer.Option(0, help="Seed of the batch order, augmentation and held-out rows."),
        augment: str = typer.Option(
            None, help="Comma-separated: flip, crop, rotate, zoom, contrast (train only)."
        ),
        source: Path = typer.Option(None, help="Where the cache's images are now, if they moved."),
        prefix_cache: str = typer.Option("auto", help="auto | off: train the top from cached activations."),
        out: Path = typer.Option(None, "--out", help="Run folder (default: RUNS_DIR/<run>-fine-tuned)."),
        runs_dir: Path = typer.Option(Path("runs"), help="Where run folders go when --out is not given."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.tuning import fine_tune

        bar = ProgressBar(unit="it", enabled=None if not quiet else False)
        notes = (lambda line: None) if quiet or json_out else (lambda line: typer.echo(line, err=True))
        try:
            run = fine_tune(
                run_dir,
                unfreeze=None if unfreeze_from else unfreeze if unfreeze == "all" else _count(unfreeze),
                unfreeze_from=unfreeze_from,
                optimizer=optimizer,
                lr=lr,
                epochs=epochs,
                batch_size=batch_size,
                patience=patience,
                class_weight=class_weight,
                seed=seed,
                augment=augment,
                source=source,
                prefix_cache=prefix_cache,
                out=out,
                runs_dir=runs_dir,
                progress=bar,
                notify=notes,
            )
        finally:
            bar.close()
        s = run.summary
        if json_out:
            keys = (
                "path",
                "unfrozen",
                "selection",
                "epoch_seconds",
                "start_check",
                "prefix_cache",
                "metrics",
            )
            print_json({k: s[k] for k in keys} | {"frozen_metrics": s["frozen_metrics"]})
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
        force: bool = typer.Option(False, "--force", help="Replace an existing file."),
        source: Path = typer.Option(None, help="Where the run's images are now, if they moved."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.export import export_run

        record = export_run(run_dir, out, format=format, force=force, source=source)
        if json_out:
            print_json(record)
            return
        v = record["verification"]
        typer.echo(
            f"verified on {v['images']} images: max difference {v['max_difference']:.2g} from `bottleneck predict`",
            err=True,
        )
        typer.echo(record["path"])


def _count(text: str):
    return int(text) if text.strip().isdigit() else text
