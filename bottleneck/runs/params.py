"""Head parameters from command-line KEY=VALUE strings (CLI and scripts share one parser), each value read as the
type its head declares (``Head._parameter_constraints``)."""

from __future__ import annotations

import json

from bottleneck import (
    heads as registry,  # a lazy package: scikit-learn loads when a head is named, not at start-up
)
from bottleneck.constraints import parse_value
from bottleneck.errors import BottleneckError, HeadError, suggest


def parse_params(items: list[str] | None, heads: list[str] | None = None, *, head: str | None = None) -> dict:
    """Head parameters from the command line: ['width=512', 'mlp.dropout=0.2'] -> {'width': 512,
    'mlp': {'dropout': 0.2}}.

    With ``head`` (one head: fit-head) or ``heads`` (compare; HEAD.KEY only then), each value is read as the
    type its head declares: ``standardize=false`` -> False, ``max_iter=100`` -> 100, ``batch_size=auto`` ->
    'auto', ``sweep_rows=none`` -> None; a value that does not read, or is not allowed, and a name no head has,
    are one HeadError. A plain KEY in ``heads`` is read by the first of them that has it. Without either, values
    are read as JSON when they parse, else as strings."""

    named = (
        [registry.canonical_name(head)]
        if head is not None
        else [registry.canonical_name(h) for h in heads or []]
    )
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BottleneckError(f"--param {item!r} must be KEY=VALUE, e.g. --param width=512.")
        prefix, dot, name = key.rpartition(".")
        if dot and heads is None:
            raise BottleneckError(
                f"--param {item!r}: name the parameter without a head here, e.g. {name}={raw}."
            )
        if not named:
            value = _json_or_text(raw)
        elif dot:
            # A head that is not compared is compare's own error (it names the compared ones).
            owner = prefix if prefix in registry.HEADS else None
            if owner is not None and name not in registry.head_constraints(owner):
                raise registry.unknown_parameter(owner, name)
            value = _json_or_text(raw) if owner is None else _typed(raw, name, [owner])
        else:
            having = [h for h in named if name in registry.head_constraints(h)]
            if not having:
                if head is not None:
                    raise registry.unknown_parameter(named[0], name)
                known = sorted({p for h in named for p in registry.head_constraints(h)})
                raise HeadError(
                    f"no compared head ({', '.join(named)}) has a parameter {name!r}.{suggest(name, known)}"
                )
            value = _typed(raw, name, having)
        if dot:
            out.setdefault(prefix, {})[name] = value
        else:
            out[key] = value
    return out


def _typed(raw: str, name: str, heads: list[str]):
    """``raw`` as the first of ``heads`` that declares ``name`` reads it (the first one's error otherwise)."""

    first = None
    for h in heads:
        try:
            return parse_value(raw, registry.head_constraints(h)[name], name=name, error=HeadError)
        except HeadError as exc:
            first = first or exc
    raise first


def _json_or_text(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
