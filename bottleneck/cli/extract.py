"""`bottleneck extract`: run a frozen backbone over a dataset once and cache the features."""

from __future__ import annotations

import typer

from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, QUIET, command
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.config import SETTINGS as CONFIG
from bottleneck.config import ExtractConfig
from bottleneck.inference.runner import ExtractResult
from bottleneck.inference.runner import extract as run_extract
from bottleneck.job_settings import EXTRACT_RUN, SOURCE_ARG

EXTRACT_HELP = """Run a frozen backbone over every image of every split once and cache the features.

SOURCE is a folder of class folders (optionally inside train/val/test folders), a SIGNS-style .h5 file, a .npz
file or a folder of .npy pairs, a folder of IDX files (MNIST / Fashion-MNIST), a CSV of path,label[,split], or
Parquet: a .parquet file, a folder of {split}-*.parquet files or a Hugging Face dataset folder (data/*.parquet).
The same command again is a cache hit that computes nothing.

Examples:

  bottleneck extract data/cats_dogs

  bottleneck extract data/cats_dogs --backbone vgg16 --pooling none --format h5

  bottleneck extract /usr/share/datasets/fashion-mnist --val-fraction 0.1 --json

  bottleneck extract data/cats_dogs --layer top_activation,block6d_expand_activation,block6a_expand_activation

  bottleneck extract data/cats_dogs --layer blocks    # every block's output: subsets later with compare --layers

  bottleneck extract data/cats_dogs --backbone pixels    # the raw-pixel baseline (32x32, flattened)

  bottleneck extract 'shards/train-{000000..000099}.tar' --label-key category    # WebDataset shards, not unpacked
  bottleneck extract hf/beans --image-column image --label-column labels    # Parquet (pip install 'bottleneck-features[parquet]')

  bottleneck extract data/cats_dogs --engine tensorflow --batch-size 64

  bottleneck extract data/photos --precision int8    # 2-3x faster on CPUs with VNNI

  bottleneck extract data/photos --fast-decode    # large JPEGs decoded at a reduced scale

  bottleneck extract data/photos --device gpu --batch-size 256    # ONNX Runtime CUDA / TensorRT

  bottleneck extract data/huge --shard-rows 4096    # 4096 rows per file instead of one file per chunk

  bottleneck extract data/huge --cluster local:4    # 4 Dask worker processes (pip install 'bottleneck-features[dask]')

  bottleneck extract data/huge --cluster tcp://scheduler:8786    # an existing Dask cluster, shared cache folder
"""


SUMMARY_JSON = JSON.but(help="Print a JSON summary instead of the path.")


@command(app, "extract", EXTRACT_HELP, SOURCE_ARG, CONFIG, EXTRACT_RUN, SUMMARY_JSON, QUIET)
def extract(source: str, json_out: bool, quiet: bool, **options) -> None:
    # Every ExtractConfig setting is an option of its own name: a new setting needs no line here.
    config = ExtractConfig(**{name: options.pop(name) for name in CONFIG.names()})
    options["cluster"] = options["cluster"] or None
    with progress_bar(quiet=quiet) as bar:
        result = run_extract(
            source, config, progress=bar, notify=lambda msg: typer.echo(msg, err=True), **options
        )
    if json_out:
        print_json(result.summary())
        return
    if not quiet:
        _report(result)
    typer.echo(result.url or str(result.path))


def _report(result: ExtractResult) -> None:
    if result.hit:
        typer.echo(f"cache hit ({result.seconds:.2f} s): nothing recomputed", err=True)
    else:
        rate = result.computed / result.seconds if result.seconds else 0.0
        msg = f"extracted {result.computed} images in {result.seconds:.1f} s ({rate:.1f} img/s)"
        if result.reused:
            msg += f", reused {result.reused} unchanged rows from an earlier cache"
        if result.resumed_from:
            msg += f", resumed after {result.resumed_from} committed rows"
        typer.echo(msg, err=True)
    if result.skipped:
        named = "; ".join(f"{s['id']} ({s['reason']})" for s in result.skipped[:5])
        more = f" and {len(result.skipped) - 5} more (meta.json lists all)" if len(result.skipped) > 5 else ""
        typer.echo(f"skipped {len(result.skipped)} unreadable image(s): {named}{more}", err=True)
