"""The ``bottleneck`` typer app, its root options and the process entry point; commands register on ``app``."""

from __future__ import annotations

import inspect
import os

import typer

from bottleneck.clash import find_clashes, ignore_pandas_warning
from bottleneck.cli.options import VERSION, parameter
from bottleneck.doctor import our_version
from bottleneck.errors import DISTRIBUTION

app = typer.Typer(
    name="bottleneck",
    help="Cache frozen-backbone image features once, then train and compare small heads in seconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{DISTRIBUTION} {our_version()}")
        raise typer.Exit()


def _root(ctx: typer.Context, version: bool = False) -> None:
    # Every command says it when the numerical Bottleneck shares our import name (one line on stderr; a few ms
    # of metadata reading); `doctor` reports it with the rest.
    if ctx.invoked_subcommand != "doctor":
        for clash in find_clashes():
            if clash.kind == "numerical":
                typer.echo(f"warning: {clash.message}", err=True)


_root.__signature__ = inspect.Signature(
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        parameter(VERSION, is_eager=True, callback=_print_version),
    ]
)
_root.__annotations__ = {"ctx": typer.Context, "version": bool}
_root.settings = (VERSION,)
app.callback()(_root)


def main() -> None:
    # The CLI owns its process: keep TensorFlow's C++ log lines (device probing, "no CUDA") off the terminal for
    # the whole run, not only while it is imported. A user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # pandas (imported by scikit-learn and TensorFlow when installed) warns that "bottleneck" is too old to be its
    # accelerator: it found us, and falls back to NumPy as it should. Not the user's problem to read about.
    ignore_pandas_warning()
    app()
