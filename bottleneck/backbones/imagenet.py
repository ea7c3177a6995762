"""The 1000 ImageNet-1k class names, offline, indexed like every ImageNet classifier's output."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from bottleneck.errors import BottleneckError

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Human-readable names; index i is output unit i (285 = "Egyptian cat", 967 = "espresso").

    The list is torchvision's ``_IMAGENET_CATEGORIES`` (BSD-3-Clause), which makes the two
    duplicated WordNet names unique ("crane bird" / "crane", "maillot" / "maillot tank suit").
    """
    text = resources.files("bottleneck").joinpath("resources/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(names) == NUM_CLASSES, f"imagenet_classes.txt has {len(names)} names"
    return names


def class_name(index: int) -> str:
    """The name of ImageNet class ``index`` (0..999)."""
    if not 0 <= int(index) < NUM_CLASSES:
        raise BottleneckError(f"ImageNet class index {index} is out of range; use 0 to {NUM_CLASSES - 1}.")
    return class_names()[int(index)]
