"""An ONNX model file's graph rewritten as a feature model: uint8 (N, S, S, 3) images in, the declared
preprocessing, only the nodes the tapped tensors need, each tap pooled, float32 features out. Pure graph surgery
(``onnx``), no runtime; and the user's graph with the taps exposed as outputs, to run it directly."""

from __future__ import annotations

import numpy as np

from bottleneck.backbones.onnx_file import OnnxGraph, load_model
from bottleneck.backbones.onnx_preprocess import Normalization

IMAGES = "images"  # the feature model's input: uint8 (N, S, S, 3) RGB
FEATURES = "features"  # its output: float32 (N, D), or (N, H, W, C) / (N, T, C) with pooling none


def _needed(graph, outputs: list[str]) -> list:
    """The nodes ``outputs`` depend on, in graph order (a classifier tail after the taps is left out: faster, and
    a tail written for a fixed batch cannot break a free one). Names read inside subgraphs count as inputs."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    keep, todo = set(), list(outputs)
    while todo:
        i = producer.get(todo.pop())
        if i is None or i in keep:
            continue
        keep.add(i)
        todo += [x for x in _reads(graph.node[i]) if x]
    return [n for i, n in enumerate(graph.node) if i in keep]


def _reads(node) -> list[str]:
    names = list(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in sub.node:
                names += _reads(inner)
    return names


def _pool(
    helper, tap: str, rank: int | None, layout: str, pooling: str, dtype: str, i: int
) -> tuple[list, str]:
    """Nodes pooling one tapped tensor to float32 (N, C) (or keeping its map for pooling none)."""
    nodes, name = [], tap
    if dtype != "float32":
        nodes.append(helper.make_node("Cast", [name], [f"tap{i}_f32"], to=1))
        name = f"tap{i}_f32"
    if rank == 2 or rank is None:
        return nodes, name
    if pooling == "none":
        if rank == 4 and layout == "nchw":  # maps are stored channels last, like every other backbone's
            nodes.append(helper.make_node("Transpose", [name], [f"tap{i}_nhwc"], perm=[0, 2, 3, 1]))
            name = f"tap{i}_nhwc"
        return nodes, name
    if pooling == "cls":
        nodes.append(helper.make_node("Gather", [name, f"tap{i}_zero"], [f"tap{i}_cls"], axis=1))
        return nodes, f"tap{i}_cls"
    # Global pooling ops take channels first: (N, C, ...) -> (N, C, 1, ...), opset-independent (ReduceMean's
    # axes moved from an attribute to an input at opset 18).
    if rank == 3 or layout == "nhwc":
        perm = [0, 2, 1] if rank == 3 else [0, 3, 1, 2]
        nodes.append(helper.make_node("Transpose", [name], [f"tap{i}_cfirst"], perm=perm))
        name = f"tap{i}_cfirst"
    op = "GlobalMaxPool" if pooling == "max" else "GlobalAveragePool"
    nodes.append(helper.make_node(op, [name], [f"tap{i}_pooled"]))
    nodes.append(helper.make_node("Flatten", [f"tap{i}_pooled"], [f"tap{i}_flat"], axis=1))
    return nodes, f"tap{i}_flat"


def feature_model(
    graph: OnnxGraph,
    *,
    size: int,
    taps: tuple[str, ...],
    pooling: str,
    norm: Normalization,
    batch: int | None = None,
):
    """The ModelProto of the feature model of ``graph``: ``IMAGES`` uint8 (batch, size, size, 3) -> ``FEATURES``.

    ``batch``: a fixed batch dimension (for a graph that cannot run free batches); None: free."""
    from onnx import TensorProto, helper

    model = load_model(graph.path, with_data=True)
    g = model.graph
    f16 = graph.dtype == "float16"
    consts = [
        helper.make_tensor("pre_mean", TensorProto.FLOAT, [3], list(norm.mean)),
        helper.make_tensor("pre_std", TensorProto.FLOAT, [3], list(norm.std)),
    ]
    pre = [
        helper.make_node("Cast", [IMAGES], ["pre_float"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["pre_float", "pre_mean"], ["pre_centred"]),
        helper.make_node("Div", ["pre_centred", "pre_std"], ["pre_scaled"]),
    ]
    x = "pre_scaled"
    if norm.channels == "bgr":
        consts.append(helper.make_tensor("pre_bgr", TensorProto.INT64, [3], [2, 1, 0]))
        pre.append(helper.make_node("Gather", [x, "pre_bgr"], ["pre_bgr_out"], axis=3))
        x = "pre_bgr_out"
    if graph.layout == "nchw":
        pre.append(helper.make_node("Transpose", [x], ["pre_nchw"], perm=[0, 3, 1, 2]))
        x = "pre_nchw"
    pre.append(
        helper.make_node(
            "Cast" if f16 else "Identity", [x], [graph.input_name], **({"to": 10} if f16 else {})
        )
    )

    body = _needed(g, list(taps))
    post, pooled = [], []
    for i, tap in enumerate(taps):
        nodes, out = _pool(helper, tap, graph.rank(tap), graph.layout, pooling, graph.tensors[tap].dtype, i)
        if pooling == "cls":
            consts.append(helper.make_tensor(f"tap{i}_zero", TensorProto.INT64, [], [0]))
        post += nodes
        pooled.append(out)
    if len(pooled) > 1:
        post.append(helper.make_node("Concat", pooled, [FEATURES], axis=1))
    else:
        post.append(helper.make_node("Identity", pooled, [FEATURES]))

    used = {n for node in body for n in _reads(node)}
    inits = [t for t in g.initializer if t.name in used]
    image = helper.make_tensor_value_info(IMAGES, TensorProto.UINT8, [batch or "batch", size, size, 3])
    out = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, None)
    new = helper.make_graph(pre + body + post, "bottleneck_features", [image], [out], consts + inits)
    new.sparse_initializer.extend(t for t in g.sparse_initializer if t.values.name in used)
    result = helper.make_model(new, opset_imports=list(model.opset_import), producer_name="bottleneck")
    result.ir_version = model.ir_version
    result.functions.extend(model.functions)
    # No value_info is carried over: shapes recorded for a fixed batch would contradict a free one.
    return result


def direct_model(graph: OnnxGraph, taps: tuple[str, ...]):
    """The user's graph unchanged, with the tapped tensors as extra outputs: what ONNX Runtime runs directly."""
    import onnx
    from onnx import helper

    model = load_model(graph.path, with_data=True)
    have = {o.name for o in model.graph.output}
    for tap in taps:
        if tap not in have:
            t = graph.tensors[tap]
            elem = onnx.TensorProto.FLOAT16 if t.dtype == "float16" else onnx.TensorProto.FLOAT
            model.graph.output.append(helper.make_tensor_value_info(tap, elem, None))
    return model


def pooled(value: np.ndarray, layout: str, pooling: str) -> np.ndarray:
    """A tapped tensor pooled in NumPy as ``feature_model`` pools it in the graph (for checking that graph)."""
    value = value.astype(np.float32)
    if value.ndim == 2:
        return value
    if pooling == "none":
        return value.transpose(0, 2, 3, 1) if value.ndim == 4 and layout == "nchw" else value
    if pooling == "cls":
        return value[:, 0]
    axes = (1,) if value.ndim == 3 else ((2, 3) if layout == "nchw" else (1, 2))
    reduce = np.max if pooling == "max" else np.mean
    return reduce(value, axis=axes)
