"""Settings declared once: name, default, constraint, help, command-line spelling and cache-key role.

A ``Setting`` is one declaration. Dataclasses of settings (``ExtractConfig``, ``TuneSettings``) carry theirs in
field metadata (``setting(...)`` or ``SOME_SETTING.field(...)``); the other jobs list theirs in a ``Settings``
table beside the job. The Python API checks values against the declared constraints (``Settings.validate``), the
command line builds its options from the same declarations (``bottleneck.cli.options``), and the option reference
is rendered from them (``bottleneck.cli.reference``): none of them restates a default, a rule or a help text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bottleneck.constraints import (
    BATCH_SIZE,
    CLASS_WEIGHT,
    IMAGE_SIZE,
    SEED,
    THREADS,
    TOP,
    Boolean,
    PathLike,
    make_constraint,
    validate_params,
)
from bottleneck.errors import BottleneckError

# What an extraction setting decides (``ExtractConfig``); every list of extraction settings is derived from it:
FEATURE = "feature"  # the value of each row: in the cache key, the per-row (donor) key and the heads' checks
ROWS = "rows"  # which images get rows, not their values: in the cache key only
STORAGE = "storage"  # how the rows are stored on disk: in the cache key only
RUN = "run"  # how the work is done (speed, threads, engine): in no key
ROLES = (FEATURE, ROWS, STORAGE, RUN)


class _Unchecked:
    """The constraint of a setting checked where its value is resolved (a head name, a path that must exist)."""

    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED = _Unchecked()


@dataclass(frozen=True, eq=False)
class Setting:
    """One setting. ``flags``: the command line's spellings (default ``--name-with-dashes``; ``--x/--no-x`` for a
    switch pair); ``type``: the command line's type (default: the default's type, else str); ``cli=False``: a
    Python-only setting; ``argument``: a positional command-line argument; ``role``: an extraction setting's
    cache-key role; ``added``: introduced after caches existed (in the key only away from its default)."""

    name: str
    default: object = None
    constraint: object = UNCHECKED
    help: str = ""
    flags: tuple[str, ...] = ()
    type: object = None
    role: str | None = None
    added: bool = False
    cli: bool = True
    argument: bool = False
    envvar: str | None = None
    base: Setting | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        assert self.role is None or self.role in ROLES, self.role

    @property
    def root(self) -> Setting:
        """The declaration this one was derived from with ``but`` (itself when it was declared here)."""
        return self if self.base is None else self.base.root

    @property
    def checked(self) -> bool:
        return self.constraint is not UNCHECKED

    def but(self, **changes) -> Setting:
        """This setting with other ``help``, ``default`` ...: the same option where a command means it slightly
        differently ("Seed of the pilot sample" vs "Seed for --val-fraction"), still one declaration."""
        return dataclasses.replace(self, base=self, **changes)

    def field(self, **changes):
        """A dataclass field declaring this setting (``changes`` as in ``but``)."""
        declared = self.but(**changes) if changes else self
        return dataclasses.field(default=declared.default, metadata={"setting": declared})

    def cli_type(self):
        if self.type is not None:
            return self.type
        if isinstance(self.default, Path):
            return Path
        return str if self.default is None or self.default is ... else type(self.default)

    def spellings(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)

    def words(self) -> str:
        """What the constraint allows, in words ("" when the value is checked where it is used)."""
        return make_constraint(self.constraint).words if self.checked else ""


def setting(default, role: str | None = None, *, constraint=UNCHECKED, help: str = "", **kw):
    """A dataclass field declaring a setting (its name is the field's): ``role`` for an extraction setting, the
    rest as ``Setting``'s."""
    return dataclasses.field(
        default=default,
        metadata={
            "setting": Setting("", default, constraint, help, role=role, **kw),
        },
    )


def declared(cls) -> Settings:
    """The settings a dataclass declares in its fields' metadata, named after the fields, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        s = f.metadata.get("setting")
        if s is not None:
            out.append(s if s.name == f.name else dataclasses.replace(s, name=f.name))
    return Settings(*out)


class Settings:
    """An ordered table of settings: the declarations of one job's parameters."""

    def __init__(self, *settings: Setting | Iterable[Setting]):
        self._by_name: dict[str, Setting] = {}
        for s in settings:
            for one in [s] if isinstance(s, Setting) else s:
                assert one.name not in self._by_name, f"{one.name} declared twice"
                self._by_name[one.name] = one

    def __iter__(self) -> Iterator[Setting]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Setting:
        return self._by_name[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def defaults(self) -> dict:
        return {s.name: s.default for s in self}

    def constraints(self) -> dict:
        """{name: constraint} of the settings that declare one, in declaration order."""
        return {s.name: s.constraint for s in self if s.checked}

    def items(self):
        """(name, constraint) of the settings that declare one: a table is what ``validate_params`` reads."""
        return self.constraints().items()

    def validate(self, values, error: type[BottleneckError] = BottleneckError) -> None:
        """``error`` for the first of ``values`` outside its declared constraint (``validate_params``)."""
        validate_params(values, self.constraints(), error)


# Shared declarations: one setting, taken by several commands (each may say it in its own words with ``but``).
SEED_SETTING = Setting("seed", 0, SEED, "Seed of the run's randomness, for reproducible results.")
BATCH_SIZE_SETTING = Setting("batch_size", 32, BATCH_SIZE, "Images per forward pass.")
THREADS_SETTING = Setting(
    "threads",
    None,
    THREADS,
    "Compute threads of the engine (ONNX Runtime / TensorFlow) (default: number of cores).",
    type=int,
)
WORKERS_SETTING = Setting("workers", None, THREADS, "Decode threads (default: number of cores).", type=int)
IMAGE_SIZE_SETTING = Setting(
    "image_size", None, IMAGE_SIZE, "Square input side in pixels (default: the backbone's).", type=int
)
TOP_SETTING = Setting("top", 3, TOP, "How many classes to show per image.")
CLASS_WEIGHT_SETTING = Setting(
    "class_weight", None, CLASS_WEIGHT, "balanced: weight classes by inverse frequency.", type=str
)
FORCE = Setting(
    "force",
    False,
    Boolean(),
    "Replace an output folder or file bottleneck did not wholly write: the old one is moved aside "
    "(NAME.replaced-<time>), never deleted.",
    flags=("--force",),
)
CACHE_DIR = Setting("cache_dir", Path("cache"), PathLike(), "Where caches live.")
RUNS_DIR = Setting("runs_dir", Path("runs"), PathLike(), "Where run folders go when --out is not given.")
OUT = Setting("out", None, UNCHECKED, "Output folder.", flags=("--out",), type=Path)
MOVED_SOURCE = Setting(
    "source", None, UNCHECKED, "Where the cache's images are now, if they moved.", type=Path
)
CACHE_ARG = Setting(
    "cache",
    ...,
    help="A cache folder made by `bottleneck extract` (or its s3:// URL).",
    argument=True,
    type=str,
)
RUN_ARG = Setting(
    "run_dir", ..., help="A run folder made by `bottleneck fit-head`.", argument=True, type=Path
)
