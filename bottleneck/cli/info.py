"""`bottleneck info`: describe one cache."""

from __future__ import annotations

import typer

from bottleneck.cache import open_cache
from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, command
from bottleneck.cli.root import app
from bottleneck.job_settings import CACHE_URL_ARG

INFO_HELP = """Describe a cache: splits, rows, feature shape, config, status.

Example:

  bottleneck info cache/vgg16-3f9a2c1d
"""


@command(
    app,
    "info",
    INFO_HELP,
    CACHE_URL_ARG,
    JSON,
)
def info(cache: str, json_out: bool) -> None:
    s = open_cache(cache, allow_incomplete=True).summary()
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
            ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {', '.join(names[-2:])}"
        )
        typer.echo(f"  layers    {len(names)}: {shown} (subsets: compare --layers, fit-head --layers)")
    classes = s["class_names"]
    typer.echo(f"  classes   {len(classes)}: {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}")
    for name, sp in s["splits"].items():
        typer.echo(f"  {name:<9} {sp['n']} x {tuple(sp['feature_shape'])}")
    if s.get("excluded"):
        ex = s["excluded"]
        typer.echo(f"  excluded  {ex['ids']} id(s) (--exclude list digest {(ex['digest'] or '?')[:12]})")
    if s["skipped"]:
        typer.echo(f"  skipped   {s['skipped']} unreadable image(s)")
