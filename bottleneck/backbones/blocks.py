"""Blocks of a backbone and where a network can be cut: what `fine-tune --unfreeze N` unfreezes.

A block is named from its layers' names (a pattern per family: EfficientNet ``block6a``, ResNet
``conv5_block3``, VGG ``block5``, MobileNetV2 ``block_16``, ...). Where a block starts is not where its first
named layer is: Inception branches and Xception shortcuts are created (and ordered) before the layer that
names the block. So the boundary is the last *cut point* before that layer: a layer whose output is the only
tensor that flows from the layers before it to the layers after it. Everything after a cut point is a
function of that one tensor, which is what lets fine-tuning train the top of a network on cached activations
of the cut tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bottleneck import _tf
from bottleneck.backbones.presets import BLOCKS, WIDE_PATTERNS, is_wide
from bottleneck.errors import BackboneError, suggest

# family -> pattern whose first group names a layer's block (re.search on the layer name).
BLOCK_PATTERNS = {
    "efficientnet": r"^(block\d+[a-z])_",
    "efficientnet_v2": r"^(block\d+[a-z])_",
    "efficientnet_lite": r"^(block\d+[a-z])_",
    "resnet": r"^(conv\d_block\d+)_",
    "resnet_v2": r"^(conv\d_block\d+)_",
    "densenet": r"^(conv\d_block\d+|pool\d)_",
    "vgg": r"^(block\d+)_",
    "xception": r"^(block\d+)_",
    "mobilenet": r"^(conv_(?:dw|pw|pad)_\d+)",
    "mobilenet_v2": r"^(block_\d+|expanded_conv)_",
    "mobilenet_v3": r"^(expanded_conv(?:_\d+)?)_",
    "inception": r"^(mixed_?\d+[a-z]?|block35_\d+|block17_\d+|block8_\d+)(?:_|$)",
    "convnext": r"_(stage_\d+_block_\d+)_",
    "alexnet": r"^(conv\d|fc\d)$",
}


@dataclass(frozen=True)
class Cut:
    """Where a network is cut: layers ``frozen`` stay fixed, the others train.

    ``index`` is the position (in ``layers``) of the last frozen layer (-1: none, everything trains).
    ``tensor_layer`` names the layer whose output is the only tensor crossing the cut (None when several
    tensors cross, so the top cannot be run from cached activations).
    """

    index: int
    layers: tuple[str, ...]  # every layer of the network but its inputs, in topological order
    tensor_layer: str | None
    description: str

    @property
    def frozen(self) -> tuple[str, ...]:
        return self.layers[: self.index + 1]

    @property
    def trainable(self) -> tuple[str, ...]:
        return self.layers[self.index + 1 :]


def _layers(base) -> list:
    keras = _tf.keras()
    return [lyr for lyr in base.layers if not isinstance(lyr, keras.layers.InputLayer)]


def _inbound(layer) -> list[str]:
    """Names of the layers whose outputs ``layer`` reads (its first call; backbones call each layer once)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    names = []
    for t in nodes[0].input_tensors:
        history = getattr(t, "_keras_history", None)
        if history is not None:
            names.append(history.operation.name)
    return names


def cut_points(base) -> list[int]:
    """Indices i (into the non-input layers) whose output is the only tensor from layers <= i to layers > i."""
    layers = _layers(base)
    position = {lyr.name: i for i, lyr in enumerate(layers)}
    # For each i, the largest index any layer <= i is read from; i is a cut point when everything read by
    # layers after i comes from i itself or from later layers.
    last_reader = [-1] * len(layers)
    for j, lyr in enumerate(layers):
        for src in _inbound(lyr):
            if src in position:
                i = position[src]
                last_reader[i] = max(last_reader[i], j)
    points, reach = [], -1
    for i in range(len(layers)):
        # reach: the furthest layer reading any output of layers < i
        if reach <= i and i + 1 < len(layers):
            points.append(i)
        reach = max(reach, last_reader[i])
    outputs = {t._keras_history.operation.name for t in base.outputs}
    # A layer whose output is also a network output (multi-layer reads) must stay above the cut.
    return [i for i in points if not any(position.get(o, len(layers)) <= i for o in outputs)]


def blocks(base, family: str | None) -> list[tuple[str, int]]:
    """(block name, index of its first named layer) in order, for a backbone family with a known pattern."""
    pattern = BLOCK_PATTERNS.get(family or "")
    if pattern is None:
        what = f"{family} networks" if family else "a model file's network"
        raise BackboneError(
            f"bottleneck does not know the blocks of {what}; pass unfreeze_from=LAYER (a layer name: "
            "`bottleneck backbones NAME --layers` lists them) or unfreeze='all'."
        )
    seen, out = set(), []
    for i, lyr in enumerate(_layers(base)):
        m = re.search(pattern, lyr.name)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            out.append((m.group(1), i))
    return out


def block_outputs(base, family: str | None, feature_layer: str | None = None) -> list[str]:
    """The layer that outputs each block (input to output), then ``feature_layer`` (default: the last layer).

    A block's output is the first cut point at or after its last named layer: the one tensor the rest of the
    network reads from it (EfficientNet ``block6c_add``, ResNet ``conv5_block2_out``, Inception ``mixed3``), so
    a block read here is also where ``fine-tune`` can start from cached activations.
    """
    pattern = BLOCK_PATTERNS.get(family or "")
    if pattern is None:
        what = f"{family} networks" if family else "a model file's network"
        raise BackboneError(
            f"bottleneck does not know the blocks of {what}, so layer='blocks' cannot be resolved; list the "
            "layers to read by name (`bottleneck backbones NAME --layers` lists them)."
        )
    layers = _layers(base)
    names = [lyr.name for lyr in layers]
    points = cut_points(base)
    last: dict[str, int] = {}
    for i, name in enumerate(names):
        m = re.search(pattern, name)
        if m:
            last[m.group(1)] = i
    out: list[str] = []
    for end in last.values():
        after = [p for p in points if p >= end]
        name = names[after[0]] if after else None
        if name is not None and name not in out:
            out.append(name)
    top = feature_layer or names[-1]
    if top in out:
        out.remove(top)
    return [*out, top]


def wide_points(base, family: str | None, feature_layer: str | None = None) -> list[str]:
    """The family's widest layers that are not block outputs (``presets.WIDE_PATTERNS``: EfficientNet
    ``block6a_expand_activation``, ResNet ``conv5_block1_2_relu``), input to output, then ``feature_layer``."""

    if family not in WIDE_PATTERNS:
        known = ", ".join(WIDE_PATTERNS)
        what = f"{family} networks" if family else "a model file's network"
        raise BackboneError(
            f"layer='wide' is not defined for {what} (only for {known}); use layer='blocks', or list the "
            "layers to read by name (`bottleneck backbones NAME --layers` lists them)."
        )
    names = [lyr.name for lyr in _layers(base)]
    top = feature_layer or names[-1]
    return [*(n for n in names if is_wide(n, family) and n != top), top]


def network_sets(base, family: str | None, feature_layer: str | None, sets) -> list[str]:
    """The layers of one or more sets resolved on the network (``blocks``, ``wide``): their union in network
    order, the feature layer last (where every set puts it)."""

    chosen: set[str] = set()
    for name in sets:
        resolve = block_outputs if name == BLOCKS else wide_points
        chosen.update(resolve(base, family, feature_layer))
    names = [lyr.name for lyr in _layers(base)]
    top = feature_layer or names[-1]
    return [*(n for n in names if n in chosen and n != top), top]


def plan_cut(base, family: str | None, *, unfreeze=None, unfreeze_from: str | None = None) -> Cut:
    """The cut for ``unfreeze`` (top N blocks, or "all") or ``unfreeze_from`` (a layer name and all after it)."""
    layers = _layers(base)
    names = tuple(lyr.name for lyr in layers)
    points = cut_points(base)
    if (unfreeze is None) == (unfreeze_from is None):
        raise BackboneError("pass one of unfreeze=N (top N blocks, or 'all') and unfreeze_from=LAYER.")
    if unfreeze_from is not None:
        if unfreeze_from not in names:
            raise BackboneError(
                f"unknown layer {unfreeze_from!r}.{suggest(unfreeze_from, names)} Pass one of the network's "
                "layer names (`bottleneck backbones NAME --layers` lists them)."
            )
        index = names.index(unfreeze_from) - 1
        return Cut(index, names, _tensor_layer(names, points, index), f"from layer {unfreeze_from}")
    if unfreeze == "all":
        return Cut(-1, names, None, "all layers")
    n = _count(unfreeze)
    found = blocks(base, family)
    if n > len(found):
        listed = ", ".join(b for b, _ in found)
        raise BackboneError(
            f"unfreeze={n} is more than the {len(found)} blocks of this network ({listed}); pass at most "
            f"{len(found)}, or unfreeze='all'."
        )
    name, first = found[-n]
    # The last cut point before the block's first named layer: its branches may come earlier in the order.
    before = [p for p in points if p < first]
    index = before[-1] if before else first - 1
    return Cut(index, names, _tensor_layer(names, points, index), f"top {n} block(s) from {name}")


def _tensor_layer(names, points, index: int) -> str | None:
    return names[index] if index in points else None


def _count(unfreeze) -> int:
    if isinstance(unfreeze, str) and unfreeze.strip().isdigit():
        unfreeze = int(unfreeze)
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 1:
        raise BackboneError(
            f"unfreeze={unfreeze!r} is not allowed; pass a number of top blocks (e.g. unfreeze=1) or 'all'."
        )
    return unfreeze


def apply_cut(base, cut: Cut, *, train_bn: bool = False) -> None:
    """Set ``trainable`` on the layers of ``base`` (the network ``cut`` was planned on) for ``cut``.

    BatchNormalization layers stay frozen unless ``train_bn``: with trainable=False Keras runs them in inference
    mode (their moving statistics are never updated), which keeps a small dataset from wrecking them. Layers
    outside ``base`` (the preprocessing and the head) are the caller's.
    """
    keras = _tf.keras()
    base.trainable = True
    train = set(cut.trainable)
    for lyr in _layers(base):
        bn = isinstance(lyr, keras.layers.BatchNormalization)
        lyr.trainable = lyr.name in train and (train_bn or not bn)


def depth_groups(base, family: str | None, cut: Cut) -> dict[str, int]:
    """The depth group of each layer above the cut: 1 for the top block (and the layers after it), 2 for the block
    below it, ... (what discriminative learning rates and gradual unfreezing count in); layers below the first
    block get the next number. A network whose blocks are unknown is one group."""
    import bisect

    if BLOCK_PATTERNS.get(family or "") is None:
        return dict.fromkeys(cut.trainable, 1)
    points = cut_points(base)
    starts = []
    for _, first in blocks(base, family):
        before = [p for p in points if p < first]
        starts.append(before[-1] + 1 if before else first)
    starts = sorted(starts)
    train = set(cut.trainable)
    out = {}
    for i, lyr in enumerate(_layers(base)):
        if lyr.name in train:
            k = bisect.bisect_right(starts, i)  # blocks starting at or before layer i
            out[lyr.name] = len(starts) - k + 1
    return out
