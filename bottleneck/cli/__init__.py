"""Command-line interface: parse, call one library function, print. The only place that imports typer."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="bottleneck",
    help="Cache frozen-backbone image features once, then train and compare small heads in seconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from bottleneck.doctor import our_version
        from bottleneck.errors import DISTRIBUTION

        typer.echo(f"{DISTRIBUTION} {our_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
):
    from bottleneck.clash import find_clashes

    # Every command says it when the numerical Bottleneck shares our import name (one line on stderr; a few ms
    # of metadata reading); `doctor` reports it with the rest.
    if ctx.invoked_subcommand != "doctor":
        for clash in find_clashes():
            if clash.kind == "numerical":
                typer.echo(f"warning: {clash.message}", err=True)


from bottleneck.cli.common import reflow_all  # noqa: E402


def _register_all() -> None:
    from bottleneck.cli import cache_cmds, doctor_cmds, extract_cmds

    for module in (extract_cmds, cache_cmds, doctor_cmds):
        module.register(app)
    for name in ("classify_cmds", "heads_cmds", "tuning_cmds", "advise_cmds", "inspect_cmds"):
        try:
            module = __import__(f"bottleneck.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"bottleneck.cli.{name}":
                raise
            continue
        module.register(app)


_register_all()
reflow_all(app)


def main() -> None:
    import os

    # The CLI owns its process: keep TensorFlow's C++ log lines (device probing, "no CUDA") off the terminal for
    # the whole run, not only while it is imported. A user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from bottleneck.clash import ignore_pandas_warning

    # pandas (imported by scikit-learn and TensorFlow when installed) warns that "bottleneck" is too old to be its
    # accelerator: it found us, and falls back to NumPy as it should. Not the user's problem to read about.
    ignore_pandas_warning()
    app()
