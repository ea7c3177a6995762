"""`bottleneck extract`, `info` and `backbones`."""

from __future__ import annotations

import typer

from bottleneck.cli.common import print_json, user_errors
from bottleneck.cli.progress import progress_bar

EXTRACT_HELP = """Run a frozen backbone over every image of every split once and cache the features.

SOURCE is a folder of class folders (optionally inside train/val/test folders), a SIGNS-style .h5 file, a .npz
file or a folder of .npy pairs, a folder of IDX files (MNIST / Fashion-MNIST), or a CSV of path,label[,split].
The same command again is a cache hit that computes nothing.

Examples:

  bottleneck extract data/cats_dogs

  bottleneck extract data/cats_dogs --backbone vgg16 --pooling none --format h5

  bottleneck extract /usr/share/datasets/fashion-mnist --val-fraction 0.1 --json

  bottleneck extract data/cats_dogs --layer top_activation,block6d_expand_activation,block6a_expand_activation

  bottleneck extract data/cats_dogs --layer blocks    # every block's output: subsets later with compare --layers

  bottleneck extract data/cats_dogs --backbone pixels    # the raw-pixel baseline (32x32, flattened)

  bottleneck extract data/cats_dogs --engine tensorflow --batch-size 64

  bottleneck extract data/photos --precision int8    # 2-3x faster on CPUs with VNNI

  bottleneck extract data/photos --fast-decode    # large JPEGs decoded at a reduced scale

  bottleneck extract data/photos --device gpu --batch-size 256    # ONNX Runtime CUDA / TensorRT

  bottleneck extract data/huge --shard-rows 4096    # 4096 rows per file instead of one file per chunk

  bottleneck extract data/huge --cluster local:4    # 4 Dask worker processes (pip install 'bottleneck-features[dask]')

  bottleneck extract data/huge --cluster tcp://scheduler:8786    # an existing Dask cluster, shared cache folder
"""


def register(app: typer.Typer) -> None:
    @app.command("extract", help=EXTRACT_HELP)
    @user_errors
    def extract_cmd(
        source: str = typer.Argument(
            ...,
            help="Image folder, .h5, .npz, .npy folder, IDX folder or CSV; or its s3:// (gs://, ...) URL.",
        ),
        backbone: str = typer.Option(
            "efficientnet_lite0", help="Registry name (see `bottleneck backbones`) or a model file."
        ),
        weights: str = typer.Option("imagenet", help="imagenet | none | PATH to a local Keras weights file."),
        image_size: int = typer.Option(None, help="Square input side in pixels (default: the backbone's)."),
        layer: str = typer.Option(
            None,
            help="Layer to take features from instead of the backbone's feature layer; several comma-separated "
            "layers are each pooled and concatenated (e.g. top_activation,block6a_expand_activation); "
            "'top' is the backbone's feature layer (the default), 'blocks' reads every block's output and the feature "
            "layer, 'wide' the family's widest points (expand activations, bottleneck middles) and the feature layer "
            "('blocks,wide': both), 'multiscale' a set measured on real data. "
            "`bottleneck backbones NAME --layers` lists the names.",
        ),
        pooling: str = typer.Option("avg", help="avg | max | none (keep the spatial map)."),
        resize: str = typer.Option(
            "squash", help="squash (ignore aspect) | crop (centre) | pad (letterbox)."
        ),
        dtype: str = typer.Option("float32", help="float32 | float16 stored features."),
        format: str = typer.Option("zarr", "--format", help="zarr | npy | h5."),
        shard_rows: int = typer.Option(
            None,
            help="zarr only: store N rows per object (a multiple of --batch-size), so a 10-million-row cache is "
            "thousands of files, not millions. An interrupted run resumes after the last whole shard.",
        ),
        preprocess: str = typer.Option(
            None, help="For a model-file backbone: caffe | torch | tf | 127 | none."
        ),
        on_bad_image: str = typer.Option(
            "fail", help="fail (name every bad file) | skip (record and leave out)."
        ),
        max_image_pixels: int = typer.Option(
            None,
            help="Refuse images larger than this many pixels (decompression-bomb guard; 0 = no limit) (default: ~89M).",
        ),
        val_fraction: float = typer.Option(
            None, help="Make a stratified validation split of this fraction of train."
        ),
        seed: int = typer.Option(0, help="Seed for --val-fraction."),
        h5_keys: str = typer.Option(
            None, help="Other h5 keys, e.g. 'train=X_train:y_train,test=X_test:y_test'."
        ),
        batch_size: int = typer.Option(32, help="Images per forward pass (= commit granularity)."),
        workers: int = typer.Option(None, help="Decode threads (default: number of cores)."),
        threads: int = typer.Option(
            None, help="Compute threads of the engine (ONNX Runtime / TensorFlow) (default: number of cores)."
        ),
        engine: str = typer.Option(
            "auto",
            help="auto (fastest verified engine) | tensorflow | onnx (ONNX Runtime, verified against TensorFlow).",
        ),
        xla: bool = typer.Option(False, "--xla", help="Compile the TensorFlow engine with XLA."),
        precision: str = typer.Option(
            "fp32",
            help="fp32 | int8: int8 runs the ONNX model quantized, calibrated on --calibration train images "
            "(2-3x faster on CPUs with VNNI; other features, so another cache).",
        ),
        calibration: int = typer.Option(256, help="int8: calibration images (stratified from train)."),
        accept_drift: bool = typer.Option(
            False, "--accept-drift", help="int8: keep features whose mean cosine to fp32 is below 0.95."
        ),
        fast_decode: bool = typer.Option(
            False,
            "--fast-decode",
            help="Decode JPEGs at a reduced scale (never below the input size) before resizing: several times "
            "faster on large photos; pixels differ slightly, so another cache.",
        ),
        device: str = typer.Option(
            "auto",
            help="auto (a GPU when the engine sees one) | cpu | gpu (an error without one). Same features "
            "within the engines' tolerance.",
        ),
        cache_dir: str = typer.Option(
            "cache",
            help="Where caches live: a folder, or an s3:// (gs://, ...) URL (staged locally, published when complete).",
        ),
        force: bool = typer.Option(False, "--force", help="Recompute even when a complete cache exists."),
        rehash: bool = typer.Option(
            False,
            "--rehash",
            help="Read and hash every image file, also those whose size and times are unchanged since the last "
            "run (which are otherwise taken from the source's hash index under --cache-dir).",
        ),
        cluster: str = typer.Option(
            None,
            envvar="BOTTLENECK_DASK_SCHEDULER",
            help="Compute on Dask: local:N starts N worker processes here; tcp://HOST:8786 uses a running "
            "scheduler whose workers share --cache-dir and the source. Same features, bit for bit; zarr only.",
        ),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary instead of the path."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.config import ExtractConfig
        from bottleneck.inference.runner import extract

        config = ExtractConfig(
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            layer=layer,
            pooling=pooling,
            resize=resize,
            dtype=dtype,
            format=format,
            shard_rows=shard_rows,
            on_bad_image=on_bad_image,
            preprocess=preprocess,
            max_image_pixels=max_image_pixels,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            engine=engine,
            xla=xla,
            precision=precision,
            calibration=calibration,
            accept_drift=accept_drift,
            fast_decode=fast_decode,
            device=device,
        )
        with progress_bar(quiet=quiet) as bar:
            result = extract(
                source,
                config,
                cache_dir=cache_dir,
                force=force,
                rehash=rehash,
                progress=bar,
                notify=lambda msg: typer.echo(msg, err=True),
                val_fraction=val_fraction,
                seed=seed,
                h5_keys=h5_keys,
                cluster=cluster or None,
            )
        if json_out:
            print_json(result.summary())
            return
        if not quiet:
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
                more = (
                    f" and {len(result.skipped) - 5} more (meta.json lists all)"
                    if len(result.skipped) > 5
                    else ""
                )
                typer.echo(f"skipped {len(result.skipped)} unreadable image(s): {named}{more}", err=True)
        typer.echo(result.url or str(result.path))

    @app.command(
        "info",
        help="Describe a cache: splits, rows, feature shape, config, status.\n\nExample:\n\n  bottleneck info cache/vgg16-3f9a2c1d",
    )
    @user_errors
    def info_cmd(
        cache: str = typer.Argument(..., help="A cache folder made by `bottleneck extract` (or its URL)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.cache import open_cache

        c = open_cache(cache, allow_incomplete=True)
        s = c.summary()
        if json_out:
            print_json(s)
            return
        cfg = s["config"]
        typer.echo(f"{s['path']}  [{s['status']}]")
        typer.echo(f"  key       {s['key']}")
        typer.echo(
            f"  backbone  {cfg['backbone']} (weights {cfg['weights']}, size {cfg['image_size'] or 'default'}, "
            f"layer {cfg['layer'] or 'default'}, pooling {cfg['pooling']}, resize {cfg['resize']}"
            f"{', fast decode' if cfg.get('fast_decode') else ''})"
        )
        device = f" on {s['device']}" if s.get("device") else ""
        shards = f", {cfg['shard_rows']} rows per shard" if cfg.get("shard_rows") else ""
        typer.echo(f"  store     {s['format']}{shards}, {cfg['dtype']}, engine {s['engine'] or '-'}{device}")
        if s.get("layers") and len(s["layers"]) > 1:
            names = [d["name"] for d in s["layers"]]
            shown = (
                ", ".join(names)
                if len(names) <= 6
                else f"{', '.join(names[:3])}, ..., {', '.join(names[-2:])}"
            )
            typer.echo(f"  layers    {len(names)}: {shown} (subsets: compare --layers, fit-head --layers)")
        typer.echo(
            f"  classes   {len(s['class_names'])}: {', '.join(s['class_names'][:10])}{' ...' if len(s['class_names']) > 10 else ''}"
        )
        for name, sp in s["splits"].items():
            typer.echo(f"  {name:<9} {sp['n']} x {tuple(sp['feature_shape'])}")
        if s["skipped"]:
            typer.echo(f"  skipped   {s['skipped']} unreadable image(s)")

    @app.command(
        "backbones",
        help="List registered backbones: input size, feature shape, parameters, weights. With --layers, list "
        "one backbone's layers and output shapes: the names `extract --layer` takes.\n\nExamples:\n\n"
        "  bottleneck backbones 'resnet*'\n\n  bottleneck backbones efficientnet_lite0 --layers",
    )
    @user_errors
    def backbones_cmd(
        pattern: str = typer.Argument("*", help="Shell-style name pattern."),
        layers: bool = typer.Option(False, "--layers", help="List the layers of the one matching backbone."),
        image_size: int = typer.Option(
            None, help="Input side for --layers shapes (default: the backbone's)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.backbones import list_backbones

        specs = list_backbones(pattern)
        if layers:
            _print_layers(specs, pattern, image_size, json_out)
            return
        rows = [
            {
                "name": s.name,
                "input_size": s.input_size,
                "feature_shape": list(s.feature_shape("avg")),
                "feature_map": list(s.feature_shape("none")),
                "params": s.params,
                "preprocess": s.preprocess,
                "weights": s.weights,
            }
            for s in specs
        ]
        if json_out:
            print_json(rows)
            return
        typer.echo(f"{'name':<22} {'input':>5} {'features':>9} {'feature map':>14} {'params':>8}  weights")
        for r in rows:
            fm = "x".join(map(str, r["feature_map"]))
            typer.echo(
                f"{r['name']:<22} {r['input_size']:>5} {r['feature_shape'][0]:>9} {fm:>14} "
                f"{r['params'] / 1e6:>7.1f}M  {r['weights']}"
            )


def _print_layers(specs, pattern: str, image_size: int | None, json_out: bool) -> None:
    from bottleneck.backbones.layers import list_layers
    from bottleneck.errors import BottleneckError

    if len(specs) != 1:
        found = ", ".join(s.name for s in specs[:8]) or "none"
        raise BottleneckError(
            f"--layers lists one backbone's layers, but {pattern!r} matches {len(specs)} ({found}); "
            "pass one backbone name."
        )
    rows = [
        {"name": n, "shape": list(s) if s is not None else None}
        for n, s in list_layers(specs[0].name, image_size=image_size)
    ]
    if json_out:
        print_json(rows)
        return
    typer.echo(
        f"{specs[0].name}: {len(rows)} layers, input to output (pass names to extract --layer a,b,...)"
    )
    for r in rows:
        shape = "x".join(map(str, r["shape"])) if r["shape"] is not None else "several outputs"
        typer.echo(f"  {r['name']:<36} {shape}")
