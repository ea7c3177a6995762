"""Commands built from the settings' declarations: a command names the settings it takes, and its typer options,
their help and their checks are derived from them (``bottleneck.settings``); no option is written by hand."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path

import typer

from bottleneck.cli.common import OPTION_NAMES, reflow, user_errors
from bottleneck.constraints import Boolean
from bottleneck.settings import Setting, Settings

# Pure command-line flags: one declaration each, shared by every command that takes them.
JSON = Setting("json_out", False, Boolean(), "Print JSON.", flags=("--json",))
QUIET = Setting("quiet", False, Boolean(), "No progress bar.", flags=("--quiet", "-q"))
VERSION = Setting("version", False, Boolean(), "Print the version and exit.", flags=("--version",))


def spelled(s: Setting, given_only: bool = False) -> tuple[str, ...]:
    """The option's spellings on the command line (typer's own ``--name-with-dashes`` where none is declared)."""
    if s.flags:
        return s.flags
    dashed = "--" + s.name.replace("_", "-")
    if s.cli_type() is bool:
        # a switch: --x when it is off by default; --x/--no-x when it is on, or when not giving it means "default"
        return (f"{dashed}/--no-{dashed[2:]}",) if given_only or s.default else (dashed,)
    return s.spellings()


def parameter(s: Setting, *, given_only: bool = False, **extra) -> inspect.Parameter:
    """The typer parameter of a setting. ``given_only``: the option defaults to None ("not given"), and the
    setting's own default is named in its help (the library applies it)."""
    text = s.help
    if s.argument:
        info = typer.Argument(s.default, help=reflow(text))
    else:
        if given_only and s.default is not None:
            text = f"{text} [default: {s.default}]"
        default = None if given_only else s.default
        info = typer.Option(default, *spelled(s, given_only), help=reflow(text), envvar=s.envvar, **extra)
        OPTION_NAMES.add(s.name)
    # what the option was derived from: tests/test_cli_options.py checks that every option has one
    info.setting = s
    # A path is read as text and checked before it becomes a Path: Path("") is ".", so --cache-dir '' would
    # quietly mean the working folder.
    annotation = str if s.cli_type() is Path else s.cli_type()
    return inspect.Parameter(
        s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info, annotation=annotation
    )


def _checked(fn: Callable, table: Settings, given_only: frozenset) -> Callable:
    """``fn`` after the given values are checked against their declared constraints (``validate_params``); a
    value left at its default is the library's to check, and so is a setting given only when passed."""

    def check_then_call(**values):
        given = {
            k: v
            for k, v in values.items()
            if k in table and k not in given_only and not table[k].argument and v != table[k].default
        }
        table.validate(given)
        paths = {
            k: Path(v)
            for k, v in values.items()
            if isinstance(v, str) and k in table and table[k].cli_type() is Path
        }
        return fn(**(values | paths))

    return check_then_call


def command(
    app: typer.Typer,
    name: str,
    help: str,
    *settings: Setting | Iterable[Setting],
    given_only: Iterable[str] = (),
):
    """Register the decorated function as ``name`` of ``app``, taking ``settings`` as its arguments and options,
    in order. The options named in ``given_only`` default to "not given" (every fine-tuning setting: the
    library's default applies). The function is called with every option by its Python name."""
    only = frozenset(given_only)
    table = Settings(*settings)

    def decorate(fn: Callable) -> Callable:
        params = [parameter(s, given_only=s.name in only) for s in table if s.cli]
        runner = _checked(fn, table, only)
        runner.__signature__ = inspect.Signature(params)
        runner.__annotations__ = {p.name: p.annotation for p in params}
        runner.__doc__, runner.__name__ = fn.__doc__, fn.__name__
        runner.settings = Settings(*(s for s in table if s.cli))
        runner.given_only = only
        app.command(name, help=reflow(help))(user_errors(runner))
        return fn

    return decorate


def group(help: str) -> typer.Typer:
    """A command group (``bottleneck cache ...``)."""
    return typer.Typer(help=reflow(help), no_args_is_help=True)
