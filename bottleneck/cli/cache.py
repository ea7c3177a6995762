"""`bottleneck cache ls|verify|rm|gc`: list, check and remove feature caches."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cache.export import export_cache
from bottleneck.cache.manage import check_removable, gc_caches, list_caches, remove_cache
from bottleneck.cli.common import print_json, say
from bottleneck.cli.options import JSON, QUIET, command, group
from bottleneck.cli.progress import progress_bar
from bottleneck.cli.root import app
from bottleneck.inference.recompute import verify_cache
from bottleneck.job_settings import CACHE_EXPORT, CACHE_GC, CACHE_RM, CACHE_VERIFY
from bottleneck.settings import CACHE_DIR

cache_app = group("List, verify, export and remove feature caches.")
app.add_typer(cache_app, name="cache")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


LS_HELP = """List caches, newest first: folder, key (first 12 hex digits), backbone, splits, size, status, created,
source.

Example:

  bottleneck cache ls --json
"""


@command(cache_app, "ls", LS_HELP, CACHE_DIR, JSON)
def ls(cache_dir: Path, json_out: bool) -> None:
    rows = list_caches(cache_dir)
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no caches in {cache_dir}")
        return
    for r in rows:
        splits = " ".join(f"{k}={v}" for k, v in r.get("splits", {}).items())
        # 12 hex digits of the key tell caches apart at a glance (the folder name has 8); --json has all 64.
        key = (r.get("key") or "?")[:12]
        typer.echo(
            f"{Path(r['path']).name:<32} {key:<12} {r.get('backbone') or '?':<20} {splits:<24} "
            f"{_mb(r.get('bytes', 0)):>10}  {r['status']}  {r.get('created') or '?'}  {r.get('source') or '?'}"
        )


VERIFY_HELP = """Check a cache whole: its sealed metadata and manifest, labels and ids against their checksums, and
every stored chunk of features re-read against its checksum. --recompute K also re-extracts K random rows per
split and compares them. Exit status 1 when anything is damaged; re-running the `bottleneck extract` that made
the cache then computes only the damaged rows again.

Example:

  bottleneck cache verify cache/vgg16-3f9a2c1d --recompute 8
"""


@command(cache_app, "verify", VERIFY_HELP, CACHE_VERIFY, JSON, QUIET)
def verify(cache: Path, recompute: int, json_out: bool, quiet: bool) -> None:
    with progress_bar("chunk", quiet or json_out) as bar:
        report = verify_cache(cache, recompute=recompute, progress=bar)
    if json_out:
        print_json(report.__dict__ | {"ok": report.ok})
    else:
        typer.echo(f"{report.path}: {report.regions} chunks checked, {report.recomputed} rows recomputed")
        for b in report.bad:
            where = (
                f"{b['split']} rows {b['start']}:{b['stop']}"
                if b.get("start") is not None
                else b["split"] or "cache"
            )
            typer.echo(f"  BAD {where}: {b['reason']}")
        typer.echo(
            "ok"
            if report.ok
            else f"{len(report.bad)} problem(s) found: re-run the `bottleneck extract` that made this cache to "
            "compute the damaged rows again (rows that match their checksums are reused), or remove it"
        )
    if not report.ok:
        raise typer.Exit(1)


RM_HELP = """Delete cache folders. Only folders made by `bottleneck extract` are deleted (a cache's meta.json whose
key matches the folder's name); anything else is refused, and nothing is deleted unless every folder given is a
cache.

Example:

  bottleneck cache rm cache/vgg16-3f9a2c1d
"""


@command(cache_app, "rm", RM_HELP, CACHE_RM)
def rm(caches: list[Path], force: bool) -> None:
    for c in caches:
        check_removable(c, force=force)
    for c in caches:
        freed = remove_cache(c, force=force)
        typer.echo(f"removed {c} ({_mb(freed)})")


GC_HELP = """Remove incomplete caches older than a threshold and orphaned temp files.

Example:

  bottleneck cache gc --older-than-hours 24 --dry-run
"""


@command(cache_app, "gc", GC_HELP, CACHE_GC, JSON)
def gc(cache_dir: Path, older_than_hours: float, dry_run: bool, json_out: bool) -> None:
    removed = gc_caches(cache_dir, older_than_s=older_than_hours * 3600, dry_run=dry_run)
    if json_out:
        print_json(removed)
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        typer.echo(f"{verb} {r['path']} ({r['reason']}, {_mb(r['bytes'])})")
    typer.echo(f"{len(removed)} item(s) {verb}, {_mb(sum(r['bytes'] for r in removed))}")


EXPORT_HELP = """Write a cache's rows out of bottleneck, read block by block through the cache's checksums: with --to
parquet one table per split (OUT/SPLIT.parquet: id, split, label, class_name, and features as a fixed-size list of
float32 or float16; the cache key, layer names and class names in the schema metadata under "bottleneck"), for
pandas, polars, DuckDB or Hugging Face datasets; with --to npy OUT/SPLIT.features.npy, SPLIT.labels.npy and
SPLIT.ids.npy. OUT is a new folder (export.json describes it); a folder bottleneck did not write is refused unless
--force. Parquet needs pyarrow (`pip install 'bottleneck-features[parquet]'`).

Examples:

  bottleneck cache export cache/vgg16-3f9a2c1d --to parquet features/

  python -c "import pandas; print(pandas.read_parquet('features/train.parquet').head())"
"""


@command(cache_app, "export", EXPORT_HELP, CACHE_EXPORT, JSON, QUIET)
def export(
    cache: str, out: Path, to: str, splits: str | None, force: bool, json_out: bool, quiet: bool
) -> None:
    with progress_bar("row", quiet or json_out) as bar:
        written = export_cache(cache, out, to=to, splits=splits, force=force, progress=bar, notify=say)
    if json_out:
        print_json([str(p) for p in written])
        return
    for p in written:
        typer.echo(str(p))
