"""The option reference: every command's arguments and options as markdown, rendered from their declarations
(``bottleneck.settings``), so the docs can never disagree with ``--help``.

    python -m bottleneck.cli.reference > docs/options.md
"""

from __future__ import annotations

from collections.abc import Iterator

import typer

from bottleneck.cli import app as bottleneck_app
from bottleneck.cli.common import reflow
from bottleneck.cli.options import spelled
from bottleneck.settings import FEATURE, ROWS, RUN, STORAGE, Setting

KEY_ROLES = {
    FEATURE: "cache key, per-row key",
    ROWS: "cache key",
    STORAGE: "cache key",
    RUN: "no key",
}


def commands(app: typer.Typer, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, object]]:
    """(command path, help, callback) of every command of ``app`` and its groups, in registration order."""
    for info in app.registered_commands:
        yield (*path, info.name), info.help or "", info.callback
    for group in app.registered_groups:
        yield from commands(group.typer_instance, (*path, group.name))


def _default(s: Setting) -> str:
    if s.default is ...:
        return "required"
    if s.default is None:
        return ""
    return f"`{s.default}`"


def _row(s: Setting, given_only: frozenset) -> str:
    shown = s.name.upper() if s.argument else ", ".join(f"`{f}`" for f in spelled(s, s.name in given_only))
    cells = [shown, _default(s), s.words(), KEY_ROLES.get(s.role, ""), reflow(s.help) or ""]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def render(app: typer.Typer, program: str = "bottleneck") -> str:
    """Markdown: a section per command with a table of its arguments and options (default, what is allowed, which
    cache key an extraction setting is part of, help)."""
    out = [f"# `{program}` options", ""]
    for path, text, callback in commands(app):
        out += [f"## `{program} {' '.join(path)}`", "", (reflow(text) or "").split("\n\n")[0], ""]
        out += ["| option | default | allowed | key | help |", "|---|---|---|---|---|"]
        out += [_row(s, getattr(callback, "given_only", frozenset())) for s in callback.settings]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(bottleneck_app))
