"""Declared parameter constraints, one checker and one command-line parser (scikit-learn's ``_param_validation``).

A constraint is a ``Constraint`` or a list of them (any one may hold): ``Interval(int, 1, None)``,
``Options({"auto"})``, ``Boolean()``, ``None``, ``String()``, ``ListOf(...)``, ``DictOf(...)``, ``Satisfies(...)``.
``validate_params`` raises the caller's error class with one line naming the value, what is allowed and a valid
example (``batch_size=0 is not allowed: an integer of at least 1; e.g. batch_size=32.``); ``parse_value`` reads a
command-line string as the declared type; ``invalid_values`` makes refused values for tests. Settings declare
their constraints in ``bottleneck.settings``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from bottleneck.errors import BottleneckError, suggest

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
NONE_WORDS = ("none",)


class Constraint:
    """One kind of allowed value. ``words``: what is allowed, in the message's words; ``example``: a valid value."""

    words = ""
    example: object = None

    def is_satisfied_by(self, value) -> bool:
        raise NotImplementedError

    def parse(self, raw: str):
        """The value a command-line string stands for under this constraint; ValueError when it does not read."""
        raise ValueError(raw)

    def invalid(self) -> list:
        """Values this constraint refuses (more are filtered by ``invalid_values`` against the whole spec)."""
        return []

    def __str__(self) -> str:
        return self.words


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) and math.isfinite(v)


def _g(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class Interval(Constraint):
    """A number of ``type`` (``int`` or ``float``; a float interval also takes integers) in [low, high], each end
    open with ``closed`` = "left" (open right), "right" (open left), "neither", or "both" (the default); None for
    an end: unbounded. Never NaN, infinity or a bool."""

    def __init__(self, type, low=None, high=None, *, closed: str = "both", example=None):  # noqa: A002
        assert type in (int, float), type
        assert closed in ("both", "left", "right", "neither"), closed
        self.type, self.low, self.high, self.closed = type, low, high, closed
        self.low_open, self.high_open = closed in ("right", "neither"), closed in ("left", "neither")
        self.example = example if example is not None else self._example()
        assert self.is_satisfied_by(self.example), (self, self.example)
        self.words = self._words()

    def _example(self):
        if self.type is int:
            low = None if self.low is None else self.low + (1 if self.low_open else 0)
            high = None if self.high is None else self.high - (1 if self.high_open else 0)
            x = 1 if low is None else max(low, 1)
            return x if high is None or x <= high else high
        if self.low is None:
            return float(self.high if self.high is not None and not self.high_open else 0.0)
        if not self.low_open:
            return float(self.low)
        return (self.low + self.high) / 2 if self.high is not None else float(self.low + 1)

    def _words(self) -> str:
        if self.type is int:
            low = None if self.low is None else self.low + (1 if self.low_open else 0)
            high = None if self.high is None else self.high - (1 if self.high_open else 0)
            if high is None:
                return "an integer" if low is None else f"an integer of at least {low}"
            if low is None:
                return f"an integer of at most {high}"
            return f"an integer of at least {low} and at most {high}"
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        low = "-inf" if self.low is None else _g(self.low)
        high = "inf" if self.high is None else _g(self.high)
        return f"a number in {lo}{low}, {high}{hi}"

    def is_satisfied_by(self, v) -> bool:
        if not (_is_int(v) if self.type is int else _is_real(v)):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def parse(self, raw: str):
        text = raw.strip()
        if self.type is int:
            return int(text)  # "1.5" and "1e3" do not read: an integer is written as one
        return float(text)

    def invalid(self) -> list:
        out = ["a string", True]
        if self.type is int:
            out.append(1.5)
        else:
            out += [float("nan"), float("inf")]
        step = 1 if self.type is int else 1e-9
        if self.low is not None:
            out.append(self.low if self.low_open else self.low - step)
        if self.high is not None:
            out.append(self.high if self.high_open else self.high + step)
        return out

    def __repr__(self) -> str:
        return f"Interval({self.type.__name__}, {self.low}, {self.high}, closed={self.closed!r})"


class Options(Constraint):
    """One of a fixed set of values (names, mostly). Alone, its message is the "unknown x; choose one of" form."""

    def __init__(self, options: Iterable, *, example=None):
        self.options = tuple(options)
        self.example = self.options[0] if example is None else example
        self.words = f"one of {', '.join(map(repr, self.options))}"

    def is_satisfied_by(self, v) -> bool:
        try:
            return any(v == o and type(v) is type(o) for o in self.options) or (
                isinstance(v, str) and v in self.options
            )
        except (TypeError, ValueError):
            return False

    def parse(self, raw: str):
        for o in self.options:
            if str(o) == raw.strip():
                return o
        raise ValueError(raw)

    def invalid(self) -> list:
        return ["not-an-option", 12345]

    def __repr__(self) -> str:
        return f"Options({self.options!r})"


class Boolean(Constraint):
    """True or False (a NumPy bool too). On the command line: true/false, 1/0, yes/no in any case."""

    words = "True or False"
    example = True

    def is_satisfied_by(self, v) -> bool:
        return isinstance(v, bool | np.bool_)

    def parse(self, raw: str):
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(raw)

    def invalid(self) -> list:
        return ["False", "maybe", 1, 0, None]


class NoneOK(Constraint):
    """None (written ``None`` in a constraint list); on the command line: none, in any case."""

    words = "None"
    example = None

    def is_satisfied_by(self, v) -> bool:
        return v is None

    def parse(self, raw: str):
        if raw.strip().lower() in NONE_WORDS:
            return None
        raise ValueError(raw)


class String(Constraint):
    """A string that is not blank (a name: a layer, a path)."""

    def __init__(self, words: str = "a name", *, example="name"):
        self.words, self.example = words, example

    def is_satisfied_by(self, v) -> bool:
        return isinstance(v, str) and v.strip() != ""

    def parse(self, raw: str):
        if raw.strip():
            return raw
        raise ValueError(raw)

    def invalid(self) -> list:
        return ["", "   ", 3]


class PathLike(Constraint):
    """A file or folder path (a str or os.PathLike), not blank; whether it exists is the caller's check."""

    words = "a path"
    example = "data"

    def is_satisfied_by(self, v) -> bool:
        return isinstance(v, os.PathLike) or (isinstance(v, str) and v.strip() != "")

    def parse(self, raw: str):
        if raw.strip():
            return raw
        raise ValueError(raw)

    def invalid(self) -> list:
        return ["", 3]


class ListOf(Constraint):
    """A list or tuple of at least ``min_len`` values, each satisfying ``item``. On the command line: JSON
    ([1, 10]) or comma-separated (1,10)."""

    def __init__(self, item: Constraint, *, min_len: int = 1, words: str | None = None, example=None):
        self.item, self.min_len = item, min_len
        self.words = words or f"a list of {_plural(item.words)}"
        self.example = example if example is not None else [item.example]

    def is_satisfied_by(self, v) -> bool:
        return (
            isinstance(v, list | tuple | np.ndarray)
            and len(v) >= self.min_len
            and all(self.item.is_satisfied_by(x.item() if isinstance(x, np.generic) else x) for x in v)
        )

    def parse(self, raw: str):
        text = raw.strip()
        if text.startswith("["):
            parts = json.loads(text)
            if not isinstance(parts, list):
                raise ValueError(raw)
            return [self.item.parse(json.dumps(p) if not isinstance(p, str) else p) for p in parts]
        return [self.item.parse(p) for p in text.split(",") if p.strip()]

    def invalid(self) -> list:
        bad = [x for x in self.item.invalid() if not self.item.is_satisfied_by(x)][:2]
        return ([[]] if self.min_len else []) + [[x] for x in bad] + ["1,2"]


class DictOf(Constraint):
    """A dict whose values satisfy ``value`` (keys: anything). On the command line: JSON."""

    def __init__(self, value: Constraint, *, words: str | None = None, example=None):
        self.value = value
        self.words = words or f"a dict of {_plural(value.words)}"
        self.example = example if example is not None else {"a": value.example}

    def is_satisfied_by(self, v) -> bool:
        return isinstance(v, dict) and all(self.value.is_satisfied_by(x) for x in v.values())

    def parse(self, raw: str):
        out = json.loads(raw)
        if not isinstance(out, dict):
            raise ValueError(raw)
        return out

    def invalid(self) -> list:
        bad = [x for x in self.value.invalid() if not self.value.is_satisfied_by(x)][:2]
        return [{"a": x} for x in bad] + ["{}"]


class Satisfies(Constraint):
    """A rule that the kinds above cannot say: ``test(value)``, described by ``words``, with ``example``."""

    def __init__(self, test: Callable[[object], bool], words: str, example, *, invalid: Iterable = ()):
        self.test, self.words, self.example, self._invalid = test, words, example, list(invalid)

    def is_satisfied_by(self, v) -> bool:
        try:
            return bool(self.test(v))
        except (TypeError, ValueError):
            return False

    def parse(self, raw: str):
        return raw

    def invalid(self) -> list:
        return self._invalid


class AnyOf(Constraint):
    """Any of several constraints (what a list in a declaration becomes); ``words`` / ``example`` replace the
    joined ones where a parameter is better described as a whole ("a number of top blocks (1 or more) or 'all'")."""

    def __init__(self, *parts, words: str | None = None, example=None):
        self.parts = tuple(make_constraint(p) for p in parts)
        said = [p.words for p in self.parts]
        self.words = words or (said[0] if len(said) == 1 else ", ".join(said[:-1]) + " or " + said[-1])
        self.example = (
            example
            if example is not None
            else next((p.example for p in self.parts if not isinstance(p, NoneOK)), None)
        )

    def is_satisfied_by(self, v) -> bool:
        return any(p.is_satisfied_by(v) for p in self.parts)

    def parse(self, raw: str):
        parsed = []
        for p in self.parts:
            try:
                value = p.parse(raw)
            except (ValueError, TypeError, json.JSONDecodeError):
                continue
            if p.is_satisfied_by(value):
                return value
            parsed.append(value)
        if parsed:
            return parsed[0]  # read, but out of range: the validator's message says what is allowed
        raise ValueError(raw)

    def invalid(self) -> list:
        return [x for p in self.parts for x in p.invalid()]


def _plural(words: str) -> str:
    for one, many in (("an integer", "integers"), ("a number", "numbers"), ("a name", "names")):
        if words.startswith(one):
            return many + words[len(one) :]
    return words


def make_constraint(spec) -> Constraint:
    """A declaration as a Constraint: None -> NoneOK, a list -> AnyOf, a Constraint as it is."""
    if spec is None:
        return NoneOK()
    if isinstance(spec, Constraint):
        return spec
    if isinstance(spec, list | tuple):
        parts = [make_constraint(p) for p in spec]
        return parts[0] if len(parts) == 1 else AnyOf(*parts)
    raise TypeError(f"not a constraint: {spec!r}")


def _only_options(c: Constraint) -> Options | None:
    """The Options of a spec that allows nothing but names (the "unknown x; choose one of" message)."""
    if isinstance(c, Options):
        return c
    if isinstance(c, AnyOf) and len(c.parts) == 1 and isinstance(c.parts[0], Options):
        return c.parts[0]
    return None


def message(name: str, value, constraint, *, typed: bool = True) -> str:
    """The one line for ``name=value`` outside ``constraint``; ``typed=False``: ``value`` is the command-line text
    as typed (shown without quotes)."""
    c = make_constraint(constraint)
    shown = repr(value.item() if isinstance(value, np.generic) else value) if typed else str(value)
    options = _only_options(c)
    if options is not None and all(isinstance(o, str) for o in options.options):
        names = [str(o) for o in options.options]
        return f"unknown {name}={shown}; choose one of: {', '.join(names)}.{suggest(str(value), names)}"
    return f"{name}={shown} is not allowed: {c.words}; e.g. {name}={c.example!r}."


def check(name: str, value, constraint, error: type[BottleneckError] = BottleneckError) -> None:
    """``error`` naming ``name=value``, what is allowed and an example, unless ``value`` satisfies ``constraint``."""
    if not make_constraint(constraint).is_satisfied_by(value):
        raise error(message(name, value, constraint))


def validate_params(
    values: Mapping, constraints: Mapping, error: type[BottleneckError] = BottleneckError
) -> None:
    """Check each of ``values`` that ``constraints`` declares (names it does not declare are the caller's), in
    the declaration's order, and raise ``error`` for the first value outside its constraint."""
    for name, constraint in constraints.items():
        if name in values:
            check(name, values[name], constraint, error)


def parse_value(raw: str, constraint, *, name: str = "value", error: type[BottleneckError] = BottleneckError):
    """A command-line string as the declared type: ``"false"`` -> False for a Boolean (true/false, 1/0, yes/no in
    any case), ``"32"`` -> 32 for an int Interval ("1.5" is refused), ``"none"`` -> None where None is allowed,
    JSON or comma lists for a ListOf. The value is then checked: ``error`` with one line when it does not read
    or is not allowed."""
    c = make_constraint(constraint)
    try:
        value = c.parse(str(raw))
    except (ValueError, TypeError, json.JSONDecodeError):
        raise error(message(name, raw, c, typed=False)) from None
    check(name, value, c, error)
    return value


def invalid_values(constraint) -> list:
    """Values the whole constraint refuses (each part's out-of-range and wrong-type values, minus those another
    part allows): what tests feed a parameter to see it refused."""
    c = make_constraint(constraint)
    out = []
    for v in c.invalid():
        if not c.is_satisfied_by(v) and not any(_same(v, o) for o in out):
            out.append(v)
    return out


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and (a == b or (a != a and b != b))
    except (TypeError, ValueError):
        return False


# Shared declarations: the same rule wherever a setting of this kind is taken (library and command line).
def max_threads() -> int:
    """The most threads (or decode workers) a setting may ask for: 4 per core, at least 256. Far above useful, and
    far below the count that exhausts memory while the threads are started (``threads=99999`` used to)."""
    return max(256, 4 * (os.cpu_count() or 1))


MAX_SEED = 2**32 - 1  # scikit-learn's and NumPy's RandomState limit
BATCH_SIZE = Interval(int, 1, None, example=32)
THREADS = [None, Interval(int, 1, max_threads(), example=2)]  # None: the number of cores
SEED = Interval(int, 0, MAX_SEED, example=0)
OPTIONAL_SEED = [None, SEED]
IMAGE_SIZE = [None, Interval(int, 16, 2048, example=224)]  # None: the backbone's default
TOP = Interval(int, 1, None, example=3)
EPOCHS = Interval(int, 1, None, example=50)
LEARNING_RATE = Interval(float, 0, None, closed="neither", example=1e-3)
PATIENCE = Interval(int, 0, None, example=5)  # epochs without a better val loss before stopping
FRACTION = Interval(float, 0, 1, closed="neither", example=0.1)  # a share of rows held out
CLASS_WEIGHT = AnyOf(
    None,
    Options(("balanced",)),
    DictOf(Interval(float, 0, None)),
    words="None, 'balanced' or a dict {label: weight} of non-negative numbers",
    example="balanced",
)
