"""`bottleneck cache ls|verify|rm|gc`."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck.cli.common import print_json, user_errors

cache_app = typer.Typer(help="List, verify and remove feature caches.", no_args_is_help=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@cache_app.command(
    "ls",
    help="List caches, newest first: folder, key (first 12 hex digits), backbone, splits, size, status, created, "
    "source.\n\nExample:\n\n  bottleneck cache ls --json",
)
@user_errors
def ls_cmd(
    cache_dir: Path = typer.Option(Path("cache"), help="Where caches live."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
):
    from bottleneck.cache.manage import list_caches

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


@cache_app.command(
    "verify",
    help="Check a cache whole: its sealed metadata and manifest, labels and ids against their checksums, and every "
    "stored chunk of features re-read against its checksum. --recompute K also re-extracts K random rows per split "
    "and compares them. Exit status 1 when anything is damaged; re-running the `bottleneck extract` that made the "
    "cache then computes only the damaged rows again.\n\n"
    "Example:\n\n  bottleneck cache verify cache/vgg16-3f9a2c1d --recompute 8",
)
@user_errors
def verify_cmd(
    cache: Path = typer.Argument(..., help="A cache folder."),
    recompute: int = typer.Option(0, help="Re-extract this many random rows per split and compare."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    from bottleneck.cli.progress import progress_bar
    from bottleneck.inference.recompute import verify_cache

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


@cache_app.command(
    "rm",
    help="Delete cache folders. Only folders made by `bottleneck extract` are deleted (a cache's meta.json whose key "
    "matches the folder's name); anything else is refused, and nothing is deleted unless every folder given is a "
    "cache.\n\nExample:\n\n  bottleneck cache rm cache/vgg16-3f9a2c1d",
)
@user_errors
def rm_cmd(
    caches: list[Path] = typer.Argument(..., help="Cache folders to delete."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Also delete a cache whose folder holds files bottleneck did not write: the cache's own files go, "
        "those files and the folder stay.",
    ),
):
    from bottleneck.cache.manage import check_removable, remove_cache

    for c in caches:
        check_removable(c, force=force)
    for c in caches:
        freed = remove_cache(c, force=force)
        typer.echo(f"removed {c} ({_mb(freed)})")


@cache_app.command(
    "gc",
    help="Remove incomplete caches older than a threshold and orphaned temp files.\n\n"
    "Example:\n\n  bottleneck cache gc --older-than-hours 24 --dry-run",
)
@user_errors
def gc_cmd(
    cache_dir: Path = typer.Option(Path("cache"), help="Where caches live."),
    older_than_hours: float = typer.Option(24.0, help="Only incomplete caches untouched for this long."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
):
    from bottleneck.cache.manage import gc_caches
    from bottleneck.constraints import Interval, check

    check("older_than_hours", older_than_hours, Interval(float, 0, None, example=24.0))
    removed = gc_caches(cache_dir, older_than_s=older_than_hours * 3600, dry_run=dry_run)
    if json_out:
        print_json(removed)
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        typer.echo(f"{verb} {r['path']} ({r['reason']}, {_mb(r['bytes'])})")
    typer.echo(f"{len(removed)} item(s) {verb}, {_mb(sum(r['bytes'] for r in removed))}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
