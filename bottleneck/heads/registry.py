"""The heads by name: building one (``make_head``), its parameters and their declared constraints."""

from __future__ import annotations

import inspect

from bottleneck.errors import HeadError, suggest
from bottleneck.heads.base import Head
from bottleneck.heads.keras_heads import LinearHead, MLPHead, PoolDenseHead, SigmoidHead
from bottleneck.heads.logreg import LogRegHead

HEADS: dict[str, type[Head]] = {
    "logreg": LogRegHead,
    "linear": LinearHead,
    "mlp": MLPHead,
    "sigmoid": SigmoidHead,
    "pool-dense": PoolDenseHead,
}


def head_params(name: str) -> dict:
    """{parameter: default} of a head, for help texts and error messages."""
    cls = HEADS[canonical_name(name)]
    return {
        p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"
    }


def head_constraints(name: str) -> dict:
    """{parameter: declared constraint} of a head (``bottleneck.constraints``): what ``fit`` checks and what
    ``--param NAME=VALUE`` is read as."""
    return dict(HEADS[canonical_name(name)]._parameter_constraints)


def unknown_parameter(key: str, name: str) -> HeadError:
    """The error for a parameter ``name`` that head ``key`` does not have, naming close ones."""
    valid = head_params(key)
    return HeadError(
        f"head {key} has no parameter {name!r}; its parameters are: {', '.join(valid)}.{suggest(name, valid)}"
    )


def canonical_name(name: str) -> str:
    """The registry name of a head ("pool_dense" -> "pool-dense"); HeadError listing the valid ones."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"pooldense": "pool-dense", "logistic": "logreg"}.get(key, key)
    if key not in HEADS:
        raise HeadError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}.{suggest(key, HEADS)}")
    return key


def make_head(name: str, **params) -> Head:
    """A new, unfitted head by name; unknown names or parameters, or a value outside a parameter's declared
    constraint, raise HeadError (before any data is read)."""
    key = canonical_name(name)
    valid = head_params(key)
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise unknown_parameter(key, unknown[0])
    head = HEADS[key](**params)
    head._validate_params()
    return head
