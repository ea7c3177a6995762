"""A run on an ONNX model file's features as one ONNX model: the feature model the cache was computed with (uint8
images in, preprocessing inside) and the head, converted to ONNX, joined with ``onnx.compose``."""

from __future__ import annotations

from pathlib import Path

from bottleneck import _tf
from bottleneck._onnx import function_to_onnx
from bottleneck.config import ExtractConfig
from bottleneck.errors import ExportError, first_line
from bottleneck.inference.chooser import choose_engine
from bottleneck.runs.folders import run_cache
from bottleneck.tuning.assembly import head_network

# tf2onnx writes opset 9 and above; an older user graph is refused in one line.
MIN_OPSET = 9


def composed_model(run):
    """The ModelProto of ``run`` (a frozen-head run on an ONNX model file's cache): ``images`` uint8
    (N, S, S, 3) -> ``probabilities`` (N, classes)."""
    import onnx
    from onnx import compose, helper

    cache = run.summary["cache"]
    config = ExtractConfig.from_dict(cache["config"])
    int8_meta = run_cache(run.summary).meta if config.precision == "int8" else None
    engine = choose_engine(config, Path(cache["path"]).parent, int8_meta=int8_meta)
    features = onnx.load(str(engine.path))
    opset = next((o.version for o in features.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ExportError(
            f"{config.backbone} uses ONNX opset {opset}; the head converts to opset {MIN_OPSET} or later: convert "
            "the model first (onnx.version_converter.convert_version(model, 13))."
        )
    head = _head_proto(run.head, opset)
    head.ir_version = features.ir_version
    # tf2onnx lists domains the head does not use (ai.onnx.ml at its own version): merge_models refuses any
    # domain both list at different versions, so the head keeps only the domains its nodes use.
    used = {n.domain for n in head.graph.node} | {""}
    kept = [o for o in head.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del head.opset_import[:]
    head.opset_import.extend(kept)
    try:
        merged = compose.merge_models(
            features, head, io_map=[("features", "features")], prefix2="head/", producer_name="bottleneck"
        )
    except Exception as exc:  # onnx.compose names the mismatch (opsets, IR versions, shapes)
        raise ExportError(
            f"cannot join {Path(config.backbone).name}'s feature model and the head into one ONNX model "
            f"({first_line(exc, with_type=True, limit=160)})."
        ) from None
    out = merged.graph.output[0]
    merged.graph.node.append(helper.make_node("Identity", [out.name], ["probabilities"]))
    merged.graph.output.remove(out)
    merged.graph.output.append(helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, None))
    return merged


def _head_proto(head, opset: int):
    """The head alone as ONNX: ``features`` float32 (N, *feature_shape) -> probabilities, at ``opset``."""
    tf = _tf.tensorflow()
    model = head_network(head)
    shape = [None, *(int(d) for d in head.feature_shape_)]
    sig = [tf.TensorSpec(shape, tf.float32, name="features")]
    fn = tf.function(lambda x: model(x, training=False), input_signature=sig)
    return function_to_onnx(
        fn, sig, input_name="features", output_name="probabilities", opset=max(opset, MIN_OPSET)
    )
