"""`bottleneck backbones`: the registered backbones, or one backbone's layers."""

from __future__ import annotations

import typer

from bottleneck.backbones import list_backbones
from bottleneck.backbones.layers import list_layers
from bottleneck.backbones.onnx_file import describe_tensors, is_onnx_path, read_graph
from bottleneck.backbones.onnx_preprocess import read_sidecar
from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, command
from bottleneck.cli.root import app
from bottleneck.errors import BottleneckError
from bottleneck.job_settings import BACKBONES

BACKBONES_HELP = """List registered backbones: input size, feature shape, parameters, weights. With --layers, list
one backbone's layers and output shapes: the names `extract --layer` takes.

Examples:

  bottleneck backbones 'resnet*'

  bottleneck backbones efficientnet_lite0 --layers

  bottleneck backbones model.onnx --layers     (an ONNX file: its graph, and the tensors --layer takes)
"""


@command(app, "backbones", BACKBONES_HELP, BACKBONES, JSON)
def backbones(pattern: str, layers: bool, image_size: int | None, json_out: bool) -> None:
    if is_onnx_path(pattern):
        _print_onnx(pattern, layers, json_out)
        return
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


def _print_onnx(path: str, layers: bool, json_out: bool) -> None:
    """An ONNX model file: what its graph takes, its default features and declared preprocessing; with --layers,
    the tensors features can be read from."""
    graph = read_graph(path)
    about = {
        "path": str(graph.path),
        "input": graph.input_name,
        "layout": graph.layout,
        "image_size": graph.size,
        "batch": graph.batch,
        "dtype": graph.dtype,
        "opset": graph.opset,
        "top": list(graph.default_taps),
        "classifier": graph.classifier_input is not None,
        "declared": read_sidecar(path),
    }
    rows = describe_tensors(path) if layers else []
    if json_out:
        print_json({**about, "tensors": rows} if layers else about)
        return
    size = graph.size or "free (pass --image-size)"
    typer.echo(
        f"{graph.path.name}: {graph.layout.upper()} {graph.dtype} input {graph.input_name!r}, size {size}, "
        f"batch {graph.batch or 'free'}, opset {graph.opset}"
    )
    what = "the classifier's input" if graph.classifier_input else "the graph's output (no classifier found)"
    typer.echo(f"  top (default features): {', '.join(graph.default_taps)} = {what}")
    typer.echo(
        f"  preprocessing declared in {path}.json: {about['declared'] or 'none (pass --preprocess or --mean/--std)'}"
    )
    if not layers:
        return
    typer.echo(f"{len(rows)} tensors, input to output (pass names to extract --layer a,b,...):")
    for r in rows:
        shape = "x".join(map(str, r["shape"])) if r["shape"] is not None else "unknown until run"
        mark = "  <- top" if r["top"] else ""
        typer.echo(f"  {r['name']:<48} {shape:<24} {r['op']}{mark}")
