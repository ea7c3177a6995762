"""Shared CLI plumbing: user errors become one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import json
import re

import typer

from bottleneck.errors import BottleneckError

EXIT_USER_ERROR = 2


# A Python parameter named in a library message: `layer='a,,b'`, `image_size=224`, `top=0`.
_PARAMETER = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s,;)]*)")
_PLAIN = re.compile(r"[\w./:,-]+")
# A bare Python parameter with an underscore (`leave shard_rows out`, `pass h5_keys`): English has no underscores,
# so such a word that is also a CLI option is the option. Not inside paths or dotted names.
_BARE = re.compile(r"(?<![\w./=-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w/=(-]|\.\w)")


# The Python names of every option of every command (``image_size`` for ``--image-size``), filled as the commands
# are built from their declarations (``bottleneck.cli.options``).
OPTION_NAMES: set[str] = set()


def option_names() -> frozenset[str]:
    return frozenset(OPTION_NAMES)


def cli_spelling(message: str, options=None) -> str:
    """A library message as the command line says it: ``image_size=224`` -> ``--image-size 224``.

    The library names Python parameters (it is called from Python too); only names that are options of the CLI
    are rewritten, and a quoted simple value loses its quotes (``on_bad_image='skip'`` -> ``--on-bad-image skip``).
    """
    options = option_names() if options is None else options

    def option(m):
        name, value = m.group(1), m.group(2)
        if name not in options:
            return m.group(0)
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" and _PLAIN.fullmatch(value[1:-1]):
            value = value[1:-1]
        flag = "--" + name.replace("_", "-")
        # force=True is a plain switch on the command line.
        return f"{flag} {value}" if value and value != "True" else flag

    def bare(m):
        return "--" + m.group(1).replace("_", "-") if m.group(1) in options else m.group(0)

    return _BARE.sub(bare, _PARAMETER.sub(option, message))


def user_errors(fn):
    """Turn BottleneckError (and Ctrl-C) into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BottleneckError as exc:
            typer.echo(f"error: {cli_spelling(str(exc))}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as exc:
            typer.echo(f"interrupted: {exc}" if str(exc) else "interrupted.", err=True)
            raise typer.Exit(130) from None

    return wrapper


def say(line: str) -> None:
    """A library notice (``notify``) as one line on stderr."""
    typer.echo(line, err=True)


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def reflow(text: str | None) -> str | None:
    """Help text as it should render at any width: the lines of a prose paragraph joined (the terminal wraps
    them), blank lines between paragraphs kept, and indented lines (examples, lists) kept as written."""
    if not text:
        return text
    out = []
    for para in re.split(r"\n[ \t]*\n", text.strip("\n")):
        lines = para.split("\n")
        if any(line.startswith((" ", "\t")) for line in lines):
            out.append(para)
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)
