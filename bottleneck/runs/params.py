"""Head parameters from command-line KEY=VALUE strings (CLI and scripts share one parser)."""

from __future__ import annotations

import json

from bottleneck.errors import BottleneckError


def parse_params(items: list[str] | None, heads: list[str] | None = None) -> dict:
    """Head parameters from the command line: ['width=512', 'mlp.dropout=0.2'] -> {'width': 512,
    'mlp': {'dropout': 0.2}}. Values are read as JSON when they parse, else as strings; HEAD.KEY only when
    ``heads`` is given."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BottleneckError(f"--param {item!r} must be KEY=VALUE, e.g. --param width=512.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, name = key.rpartition(".")
        if dot:
            if heads is None:
                raise BottleneckError(
                    f"--param {item!r}: name the parameter without a head here, e.g. {name}={raw}."
                )
            out.setdefault(head, {})[name] = value
        else:
            out[key] = value
    return out
