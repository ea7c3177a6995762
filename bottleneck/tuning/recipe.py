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
from dataclasses import dataclass

from bottleneck.constraints import FRACTION, AnyOf, Boolean, Interval, Options, Satisfies, String
from bottleneck.errors import TuneError, one_of, suggest
from bottleneck.settings import (
    BATCH_SIZE_SETTING,
    CLASS_WEIGHT_SETTING,
    RUN,
    SEED_SETTING,
    WORKERS_SETTING,
    declared,
    setting,
)

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
# came back below the start by epoch 3-4 instead of 5 at lr 1e-3 on Fashion-MNIST, inside patience 4 (README).
DEFAULT_VIEWS = 4


UNFREEZE = AnyOf(
    Interval(int, 1, None), Options(("all",)), words="a number of top blocks (1 or more) or 'all'"
)
LAYER = [None, String("a layer name", example="top_conv")]
NAMES = Satisfies(lambda v: True, "names", "crop,zoom")  # checked by augment_names, which names the bad one


@dataclass(frozen=True)
class TuneSettings:
    """Every setting of a fine-tuning run, each declared once in its field (``bottleneck.settings``): default,
    constraint, help. Built once (``TuneSettings(**kw)`` or ``settings.replace(...)``); ``__post_init__``
    normalises spellings and checks each value against its declaration. A RUN setting is not in the recipe."""

    # the top N blocks train (names known per family), or "all"
    unfreeze: int | str = setting(3, constraint=UNFREEZE, type=str, help="Top N blocks to train, or 'all'.")
    unfreeze_from: str | None = setting(
        None, constraint=LAYER, type=str, help="Train this layer and every layer after it (any model)."
    )
    # AdamW: decoupled weight decay
    optimizer: str = setting("adamw", constraint=Options(OPTIMIZERS), help="adamw | adam | sgd.")
    lr: float = setting(
        1e-3,
        constraint=Interval(float, 0, 1, closed="right", example=1e-3),
        help="Peak learning rate of the head.",
    )
    # discriminative learning rates: the top block learns at lr_decay x the head's; 1 = one rate for all
    lr_decay: float = setting(
        0.5,
        constraint=Interval(float, 0, 1, closed="right", example=0.5),
        help="Each block below learns at this x the one above.",
    )
    momentum: float = setting(
        0.9, constraint=Interval(float, 0, 1, closed="left", example=0.9), help="SGD momentum."
    )
    # per step x lr
    weight_decay: float = setting(
        0.05, constraint=Interval(float, 0, 1, example=0.05), help="Decoupled weight decay (adamw, sgd)."
    )
    # after the warm-up: cosine to 0, one-cycle, or flat
    schedule: str = setting(
        "cosine", constraint=Options(SCHEDULES), help="cosine | onecycle | constant (after --warmup)."
    )
    # (cosine, constant)
    warmup: float = setting(
        1.0, constraint=Interval(float, 0, None, example=1.0), help="Epochs of linear warm-up."
    )
    # measured harmful: a smoothed model is less confident, so its val loss rarely beats the start's
    label_smoothing: float = setting(
        0.0,
        constraint=Interval(float, 0, 1, closed="left", example=0.1),
        help="Label smoothing of the loss.",
    )
    # epoch 1 trains the head and top block, each epoch one block more
    gradual: bool = setting(False, constraint=Boolean(), help="One block more per epoch.")
    # batch statistics of the unfrozen blocks
    train_bn: bool = setting(False, constraint=Boolean(), help="Train BatchNorm.")
    # at most; early stopping on val loss
    epochs: int = setting(10, constraint=Interval(int, 1, None), help="Maximum epochs.")
    batch_size: int = BATCH_SIZE_SETTING.field(help="Images per step.")
    patience: int = setting(
        4,
        constraint=Interval(int, 0, None),
        help="Stop after this many epochs in a row without a new lowest val loss (the start's included).",
    )
    class_weight: str | dict | None = CLASS_WEIGHT_SETTING.field()
    seed: int = SEED_SETTING.field(help="Seed of batch order, augmentation, views, held-out rows.")
    # names of AUGMENTATIONS (default VIEW_AUGMENT); with views=0, applied on the fly
    augment: tuple | str | None = setting(
        None,
        constraint=NAMES,
        type=str,
        help="Comma-separated: flip, crop, rotate, zoom, contrast (train only).",
    )
    # cached below the cut; None: DEFAULT_VIEWS where one tensor crosses the cut (prefix_cache="auto"), else 0
    views: int | None = setting(
        None,
        constraint=[None, Interval(int, 0, None)],
        type=int,
        help="Augmented views of each train image, cached (default: 4 where the cut allows).",
    )
    # val and test are plain images; training on augmented views alone raised val loss on Fashion-MNIST (README)
    plain_view: bool = setting(
        True, constraint=Boolean(), help="With --views: the plain image is one of the views drawn."
    )
    prefix_cache: str = setting(
        "auto", constraint=Options(PREFIX_CACHE), help="auto | off: train the top from cache."
    )
    val_fraction: float = setting(0.1, constraint=FRACTION, help="Held out of train without a val split.")
    workers: int | None = WORKERS_SETTING.field(role=RUN, cli=False)

    def __post_init__(self):
        unfreeze = self.unfreeze
        if isinstance(unfreeze, str) and unfreeze.strip().isdigit():
            object.__setattr__(self, "unfreeze", int(unfreeze))
        SETTINGS.validate({s.name: getattr(self, s.name) for s in SETTINGS}, TuneError)
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
        return SETTINGS.constraints()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return SETTINGS.names()

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
        for s in SETTINGS:
            if s.role == RUN:
                continue
            v = getattr(self, s.name)
            out[s.name] = ",".join(v) if s.name == "augment" else v
        if self.optimizer != "sgd":
            out.pop("momentum")
        return out

    def digest(self) -> str:
        blob = json.dumps(self.recipe(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


SETTINGS = declared(TuneSettings)


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
