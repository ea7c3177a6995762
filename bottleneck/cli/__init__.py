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


def _register_all() -> None:
    from bottleneck.cli import cache_cmds, extract_cmds

    for module in (extract_cmds, cache_cmds):
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


def main() -> None:
    import os

    # The CLI owns its process: keep TensorFlow's C++ log lines (device probing, "no CUDA") off the terminal for
    # the whole run, not only while it is imported. A user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    # pandas (imported by scikit-learn when installed, e.g. with the inspect extra) finds this package under the
    # name of the numerics library `bottleneck` and warns that its version is too old; it then does without it.
    warnings.filterwarnings("ignore", message=r"Pandas requires version .* of 'bottleneck'")
    app()
