"""`bottleneck export`: a run as one model file, read back and checked against `bottleneck predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, command
from bottleneck.cli.root import app
from bottleneck.job_settings import EXPORT

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


@command(app, "export", EXPORT_HELP, EXPORT, JSON)
def export(run_dir: Path, out: Path | None, json_out: bool, **options) -> None:
    from bottleneck.export import export_run  # the job loads when it runs: a fast start

    record = export_run(run_dir, out, **options)
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
