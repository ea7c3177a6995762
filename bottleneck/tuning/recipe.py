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
from dataclasses import dataclass, field

from bottleneck.constraints import (
    CLASS_WEIGHT,
    FRACTION,
    SEED,
    THREADS,
    AnyOf,
    Boolean,
    Interval,
    Options,
    Satisfies,
    String,
    validate_params,
)
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


UNFREEZE = AnyOf(
    Interval(int, 1, None), Options(("all",)), words="a number of top blocks (1 or more) or 'all'"
)
LAYER = [None, String("a layer name", example="top_conv")]
NAMES = Satisfies(lambda v: True, "names", "crop,zoom")  # checked by augment_names, which names the bad one


def _setting(default, constraint, recipe: bool = True):
    """A field with its constraint (``bottleneck.constraints``); ``recipe``: part of what the run records as its
    recipe (and resumes by)."""
    return field(default=default, metadata={"constraint": constraint, "recipe": recipe})


@dataclass(frozen=True)
class TuneSettings:
    """Every setting of a fine-tuning run. Built once (``TuneSettings(**kw)`` or ``settings.replace(...)``);
    ``__post_init__`` normalises spellings and checks each value against its field's rule."""

    unfreeze: int | str = _setting(3, UNFREEZE)  # the top N blocks train (names known per family), or "all"
    unfreeze_from: str | None = _setting(None, LAYER)  # or: this layer and every layer after it (any model)
    optimizer: str = _setting("adamw", Options(OPTIMIZERS))  # AdamW (decoupled weight decay), Adam or SGD
    lr: float = _setting(
        1e-3, Interval(float, 0, 1, closed="right", example=1e-3)
    )  # peak learning rate of the head
    # discriminative learning rates: each unfrozen block learns at lr_decay x the block above it (the top block
    # at lr_decay x the head's); 1 = one rate for all
    lr_decay: float = _setting(0.5, Interval(float, 0, 1, closed="right", example=0.5))
    momentum: float = _setting(0.9, Interval(float, 0, 1, closed="left", example=0.9))  # SGD only
    weight_decay: float = _setting(0.05, Interval(float, 0, 1, example=0.05))  # decoupled, per step x lr
    schedule: str = _setting(
        "cosine", Options(SCHEDULES)
    )  # after the warm-up: cosine to 0, one-cycle, or flat
    warmup: float = _setting(
        1.0, Interval(float, 0, None, example=1.0)
    )  # epochs of linear warm-up (cosine, constant)
    # measured harmful: a smoothed model is less confident, so its val loss rarely beats the start's
    label_smoothing: float = _setting(0.0, Interval(float, 0, 1, closed="left", example=0.1))
    gradual: bool = _setting(
        False, Boolean()
    )  # epoch 1 trains the head and top block, each epoch one block more
    train_bn: bool = _setting(False, Boolean())  # BatchNorm of the unfrozen blocks trains (batch statistics)
    epochs: int = _setting(10, Interval(int, 1, None))  # at most; early stopping on val loss
    batch_size: int = _setting(32, Interval(int, 1, None))
    patience: int = _setting(
        3, Interval(int, 0, None)
    )  # epochs without a new lowest val loss (start included) before stopping
    class_weight: str | dict | None = _setting(None, CLASS_WEIGHT)
    seed: int = _setting(0, SEED)  # batch order, augmentation, views, held-out rows
    # augmentations (names of AUGMENTATIONS): what the cached views are made with (default VIEW_AUGMENT); with
    # views=0, applied on the fly (the whole network runs every epoch)
    augment: tuple | str | None = _setting(None, NAMES)
    # K augmented views of each train image, cached below the cut; None: DEFAULT_VIEWS where the cut allows
    # caching (one tensor crosses it, prefix_cache="auto"), else 0
    views: int | None = _setting(None, [None, Interval(int, 0, None)])
    # with views: the plain image is one of the K + 1 drawn per image and epoch (val and test are plain images;
    # training on augmented views alone raised val loss in every run on Fashion-MNIST, README)
    plain_view: bool = _setting(True, Boolean())
    prefix_cache: str = _setting("auto", Options(PREFIX_CACHE))  # "off": always run the whole network
    val_fraction: float = _setting(0.1, FRACTION)
    workers: int | None = _setting(None, THREADS, recipe=False)  # image decode threads

    def __post_init__(self):
        unfreeze = self.unfreeze
        if isinstance(unfreeze, str) and unfreeze.strip().isdigit():
            object.__setattr__(self, "unfreeze", int(unfreeze))
        validate_params(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, self.constraints(), TuneError
        )
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
    def constraints(cls) -> dict:
        """{setting: its declared constraint}."""
        return {f.name: f.metadata["constraint"] for f in dataclasses.fields(cls)}

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
