"""MkDocs hook: the two generated reference pages, made at build time from the program itself (never hand-copied).

- ``reference/cli.md``: every command of the typer app, walked as the click command ``typer.main.get_command``
  builds (the one ``bottleneck --help`` prints from): its help, usage, and each argument and option with its
  type, default and help.
- ``reference/api.md``: one mkdocstrings block per public name of ``bottleneck/__init__.py`` (its ``_LAZY``
  table), pointing at the module that defines it, so the docstrings are read where they are written.
"""

from __future__ import annotations

import inspect

from mkdocs.structure.files import File

CLI_PAGE = "reference/cli.md"
API_PAGE = "reference/api.md"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# typer ships its own copy of click (``typer._click``): commands are recognised by what they have, not their class.
def _ctx(command, **kw):
    return command.context_class(command, **kw)


def _is_group(command) -> bool:
    return hasattr(command, "list_commands")


def _default(param) -> str:
    if param.required:
        return "required"
    if getattr(param, "is_flag", False) and not param.secondary_opts:
        return "off" if not param.default else "on"
    default = param.default
    if default is None or default == () or callable(default):
        return ""
    if isinstance(default, bool) and param.secondary_opts:
        return f"`{(param.opts if default else param.secondary_opts)[0]}`"
    return f"`{default}`"


def _summary(command) -> str:
    """The first paragraph of a command's help (click's short help stops at the first full stop: "e.g.")."""
    return inspect.cleandoc(command.help or "").split("\n\n")[0]


def _type(param) -> str:
    """The value's type as `--help` shows it (``<int>``), "flag" for on/off options."""
    if getattr(param, "is_flag", False):
        return "flag"
    if getattr(param, "type", None) is not None:
        return param.type.name
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    name = getattr(annotation, "__name__", None) or str(annotation or "")
    return name.replace("typing.", "")


def _names(param) -> str:
    if param.param_type_name == "argument":
        return f"`{(param.metavar or param.name).upper()}`"
    return ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])


def _commands(command, path: tuple[str, ...]):
    yield path, command
    if _is_group(command):
        for name in command.list_commands(_ctx(command)):
            yield from _commands(command.get_command(_ctx(command), name), (*path, name))


def cli_reference() -> str:
    import typer

    from bottleneck.cli import app

    root = typer.main.get_command(app)
    out = [
        "# CLI reference",
        "",
        "Generated when the site is built, from the click command that `bottleneck --help` prints from "
        "(`docs/hooks/reference.py`): every command, argument and option, with its type, default and help.",
        "",
    ]
    for path, command in _commands(root, ("bottleneck",)):
        ctx = _ctx(command, info_name=" ".join(path))
        title = " ".join(path)
        out += [f"## `{title}`", "", inspect.cleandoc(command.help or ""), ""]
        out += ["```text", command.get_usage(ctx).replace("Usage: ", ""), "```", ""]
        params = [p for p in command.get_params(ctx) if p.name != "help"]
        if _is_group(command):
            subs = command.list_commands(ctx)
            out += ["| command | what it does |", "|---|---|"]
            for name in subs:
                sub = command.get_command(ctx, name)
                out.append(f"| [`{name}`](#{'-'.join((*path, name)).lower()}) | {_cell(_summary(sub))} |")
            out.append("")
        if params:
            out += ["| argument / option | type | default | help |", "|---|---|---|---|"]
            for p in params:
                kind = _type(p)
                out.append(
                    f"| {_names(p)} | {_cell(kind)} | {_cell(_default(p))} | {_cell(getattr(p, 'help', '') or '')} |"
                )
            out.append("")
    return "\n".join(out) + "\n"


def api_reference() -> str:
    import bottleneck

    out = [
        "# Python API reference",
        "",
        "Generated when the site is built: one entry per public name of `bottleneck/__init__.py` (what "
        "`dir(bottleneck)` lists), read from the docstrings of the module that defines it. Every name is "
        "imported as `bottleneck.NAME`; the heading shows where it is defined.",
        "",
    ]
    for name in sorted(bottleneck._LAZY, key=str.lower):
        # the defining module: a name of the table may come through a lazy package (``bottleneck.runs``)
        obj = getattr(bottleneck, name)
        out += [f"::: {obj.__module__}.{obj.__qualname__}", "    options:", "      heading_level: 2", ""]
    return "\n".join(out) + "\n"


def on_files(files, config):
    from bottleneck.clash import pandas_warning_ignored

    # importing the public names brings in scikit-learn, hence pandas, which warns about our package's name
    with pandas_warning_ignored():
        for uri, make in ((CLI_PAGE, cli_reference), (API_PAGE, api_reference)):
            files.append(File.generated(config, uri, content=make()))
    return files
