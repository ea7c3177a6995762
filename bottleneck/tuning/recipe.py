"""The fine-tuning recipe: every setting of `fine_tune` in one frozen dataclass, checked once against constraints
declared beside each field, and what the settings build (learning rates by depth, the schedule, the loss).

The defaults are the recipe that measured best on three datasets of different kinds (README, "Fine-tuning
recipes measured"); each part is a named setting so that it can be measured again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bottleneck.errors import TuneError, one_of, suggest

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
PREFIX_CACHE = ("auto", "off")
AUGMENTATIONS = (
    "flip",
    "crop",
    "rotate",
    "zoom",
    "contrast",
)  # the names `tuning.images.augmentation` builds
# What `views=K` augments with when `augment` is not given: label-preserving for clothing, digits and faces alike
# (no flip: a mirrored digit is another glyph).
VIEW_AUGMENT = ("crop", "rotate", "zoom", "contrast")
ONECYCLE_START = 25.0  # one-cycle starts at lr / 25 (fastai's div)
# What views=None (the default) becomes where the activations below the cut can be cached: with 4 views the run
# came back below the start by epoch 3-4 instead of 5 at lr 1e-3 on Fashion-MNIST, inside patience 3 (README).
DEFAULT_VIEWS = 4


@dataclass(frozen=True)
class Rule:
    """A declared constraint: ``test(value)`` passes, else the message says ``allowed`` and gives ``example``."""

    allowed: str  # what is allowed, in words ("a number in (0, 1]")
    test: Callable[[object], bool]
    example: object  # a valid value shown in the message
    choices: tuple = ()  # for a fixed set of names: the standard "unknown x; choose one of" message

    def check(self, name: str, value) -> None:
        if self.test(value):
            return
        if self.choices:
            raise one_of(name, value, self.choices)
        raise TuneError(f"{name}={value!r} is not allowed: {self.allowed}; e.g. {name}={self.example!r}.")


def _real(v) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)
    )


def choice(*names: str) -> Rule:
    return Rule(f"one of {', '.join(names)}", lambda v: v in names, names[0], names)


def integer(low: int) -> Rule:
    return Rule(
        f"an integer of at least {low}",
        lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= low,
        max(low, 1),
    )


def number(low: float, high: float | None, *, low_open=False, high_open=False, example=None) -> Rule:
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    words = f"a number in {lo}{low:g}, {'inf' if high is None else f'{high:g}'}{hi}"

    def test(v):
        if not _real(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    return Rule(words, test, example if example is not None else low)


def optional(rule: Rule) -> Rule:
    return Rule(f"None or {rule.allowed}", lambda v: v is None or rule.test(v), rule.example, ())


BOOLEAN = Rule("True or False", lambda v: isinstance(v, bool | np.bool_), True)
UNFREEZE = Rule(
    "a number of top blocks (1 or more) or 'all'",
    lambda v: v == "all" or (isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1),
    2,
)
LAYER = Rule(
    "None or a layer name", lambda v: v is None or (isinstance(v, str) and v.strip() != ""), "top_conv"
)
CLASS_WEIGHT = Rule(
    "None, 'balanced' or a dict {label: weight} of non-negative numbers",
    lambda v: (
        v is None or v == "balanced" or (isinstance(v, dict) and all(_real(w) and w >= 0 for w in v.values()))
    ),
    "balanced",
)


def _setting(default, rule: Rule, recipe: bool = True):
    """A field with its constraint; ``recipe``: part of what the run records as its recipe (and resumes by)."""
    return field(default=default, metadata={"rule": rule, "recipe": recipe})


@dataclass(frozen=True)
class TuneSettings:
    """Every setting of a fine-tuning run. Built once (``TuneSettings(**kw)`` or ``settings.replace(...)``);
    ``__post_init__`` normalises spellings and checks each value against its field's rule."""

    unfreeze: int | str = _setting(3, UNFREEZE)  # the top N blocks train (names known per family), or "all"
    unfreeze_from: str | None = _setting(None, LAYER)  # or: this layer and every layer after it (any model)
    optimizer: str = _setting("adamw", choice(*OPTIMIZERS))  # AdamW (decoupled weight decay), Adam or SGD
    lr: float = _setting(1e-3, number(0, 1, low_open=True, example=1e-3))  # peak learning rate of the head
    # discriminative learning rates: each unfrozen block learns at lr_decay x the block above it (the top block
    # at lr_decay x the head's); 1 = one rate for all
    lr_decay: float = _setting(0.5, number(0, 1, low_open=True, example=0.5))
    momentum: float = _setting(0.9, number(0, 1, high_open=True, example=0.9))  # SGD only
    weight_decay: float = _setting(0.05, number(0, 1, example=0.05))  # decoupled, per step x lr
    schedule: str = _setting(
        "cosine", choice(*SCHEDULES)
    )  # after the warm-up: cosine to 0, one-cycle, or flat
    warmup: float = _setting(1.0, number(0, None, example=1.0))  # epochs of linear warm-up (cosine, constant)
    # measured harmful: a smoothed model is less confident, so its val loss rarely beats the start's
    label_smoothing: float = _setting(0.0, number(0, 1, high_open=True, example=0.1))
    gradual: bool = _setting(
        False, BOOLEAN
    )  # epoch 1 trains the head and top block, each epoch one block more
    train_bn: bool = _setting(False, BOOLEAN)  # BatchNorm of the unfrozen blocks trains (batch statistics)
    epochs: int = _setting(10, integer(1))  # at most; early stopping on val loss
    batch_size: int = _setting(32, integer(1))
    patience: int = _setting(
        3, integer(0)
    )  # epochs without a new lowest val loss (start included) before stopping
    class_weight: str | dict | None = _setting(None, CLASS_WEIGHT)
    seed: int = _setting(0, integer(0))  # batch order, augmentation, views, held-out rows
    # augmentations (names of AUGMENTATIONS): what the cached views are made with (default VIEW_AUGMENT); with
    # views=0, applied on the fly (the whole network runs every epoch)
    augment: tuple | str | None = _setting(None, Rule("names", lambda v: True, "crop,zoom"))
    # K augmented views of each train image, cached below the cut; None: DEFAULT_VIEWS where the cut allows
    # caching (one tensor crosses it, prefix_cache="auto"), else 0
    views: int | None = _setting(None, optional(integer(0)))
    # with views: the plain image is one of the K + 1 drawn per image and epoch (val and test are plain images;
    # training on augmented views alone raised val loss in every run on Fashion-MNIST, README)
    plain_view: bool = _setting(True, BOOLEAN)
    prefix_cache: str = _setting("auto", choice(*PREFIX_CACHE))  # "off": always run the whole network
    val_fraction: float = _setting(0.1, number(0, 1, low_open=True, high_open=True, example=0.1))
    workers: int | None = _setting(None, optional(integer(1)), recipe=False)  # image decode threads

    def __post_init__(self):
        unfreeze = self.unfreeze
        if isinstance(unfreeze, str) and unfreeze.strip().isdigit():
            object.__setattr__(self, "unfreeze", int(unfreeze))
        for f in dataclasses.fields(self):
            f.metadata["rule"].check(f.name, getattr(self, f.name))
        object.__setattr__(self, "augment", augment_names(self.augment))
        if self.views and not self.augment:
            object.__setattr__(self, "augment", VIEW_AUGMENT)
        if self.views and self.prefix_cache == "off":
            raise TuneError(
                f"views={self.views} trains from cached activations, which prefix_cache='off' turns off; pass "
                "prefix_cache='auto', or views=0 to augment on the fly through the whole network."
            )
        if self.gradual and self.unfreeze_from is not None:
            raise TuneError(
                f"gradual=True unfreezes one block per epoch, but unfreeze_from={self.unfreeze_from!r} names a layer, "
                "not blocks; pass unfreeze=N with gradual=True, or gradual=False."
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, settings: TuneSettings | None = None, **overrides) -> TuneSettings:
        """``settings`` (or the defaults) with ``overrides``; an unknown name is one error naming close ones."""
        names = cls.names()
        for name in overrides:
            if name not in names:
                raise TuneError(
                    f"unknown setting {name}={overrides[name]!r}.{suggest(name, names)} Settings: {', '.join(names)}."
                )
        base = settings or cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    def resolve_views(self, cacheable: bool) -> TuneSettings:
        """``views=None`` made a number: DEFAULT_VIEWS where activations below the cut can be cached, else 0 (what
        the run records, so that a resume or a repeat trains the same)."""
        if self.views is not None:
            return self
        return self.replace(views=DEFAULT_VIEWS if cacheable and self.prefix_cache == "auto" else 0)

    def replace(self, **changes) -> TuneSettings:
        return TuneSettings.build(self, **changes)

    def recipe(self) -> dict:
        """The settings that decide the result, JSON-ready (what a run records and a resume must match)."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.metadata["recipe"]:
                continue
            v = getattr(self, f.name)
            out[f.name] = ",".join(v) if f.name == "augment" else v
        if self.optimizer != "sgd":
            out.pop("momentum")
        return out

    def digest(self) -> str:
        blob = json.dumps(self.recipe(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def augment_names(names) -> tuple[str, ...]:
    """("flip", "crop") from "flip,crop", a list, or None; each name one of AUGMENTATIONS."""
    if names is None or names == "" or names == ():
        return ()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    for n in names:
        if n not in AUGMENTATIONS:
            raise one_of("augment", n, AUGMENTATIONS)
    return tuple(dict.fromkeys(names))


def group_rates(settings: TuneSettings, groups: int) -> list[float]:
    """Peak learning rate of each depth group: group 0 is the head, group g the g-th unfrozen block from the top."""
    return [settings.lr * settings.lr_decay**g for g in range(groups)]


def lr_at(settings: TuneSettings, peak: float, step: float, steps_per_epoch: int) -> float:
    """The learning rate at (fractional) ``step`` of a run of ``settings.epochs`` epochs, for a group of ``peak``.

    cosine: linear warm-up from 0 over ``warmup`` epochs, then half a cosine down to 0 at the last step;
    onecycle: from peak / 25 up to peak over the first 30 % of the steps, then cosine down to ~0 (fastai);
    constant: the warm-up, then ``peak``.
    """
    total = max(1, settings.epochs * steps_per_epoch)
    if settings.schedule == "onecycle":
        rise = max(1.0, 0.3 * total)
        if step < rise:
            start = peak / ONECYCLE_START
            return start + (peak - start) * (1 - math.cos(math.pi * step / rise)) / 2
        t = min(1.0, (step - rise) / max(1.0, total - rise))
        return peak * (1 + math.cos(math.pi * t)) / 2
    warm = settings.warmup * steps_per_epoch
    if step < warm:
        return peak * (step + 1) / (warm + 1)
    if settings.schedule == "constant":
        return peak
    t = min(1.0, (step - warm) / max(1.0, total - warm))
    return peak * (1 + math.cos(math.pi * t)) / 2
