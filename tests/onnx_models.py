"""Small ONNX image models written with onnx.helper, the way exporters write them: NCHW with a free batch
(PyTorch, Paddle), NHWC behind a Transpose (tf2onnx), fixed to a batch of 1 (a plain torch.onnx.export), a
ViT-like token output, float16 input; and the real model installed from the registry (rapidocr's Paddle2ONNX
text-orientation classifier)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _save(nodes, inputs, outputs, inits, path: Path, opset: int = 13) -> Path:
    graph = helper.make_graph(nodes, "model", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def convnet(
    path,
    *,
    layout="nchw",
    batch="N",
    size=32,
    head=True,
    dtype=TensorProto.FLOAT,
    reshape_batch=False,
    seed=0,
):
    """Conv -> Relu -> Conv -> Relu -> GlobalAveragePool -> Flatten [-> Gemm -> Softmax]. Tensors: c1, r1, c2, r2,
    g, f (the classifier's input), logits, prob. ``reshape_batch``: the flatten is a Reshape to (1, 16), as
    exporters write for a fixed batch of 1 (the graph then runs one image at a time only)."""
    rng = np.random.default_rng(seed)
    np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np_type), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np_type), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np_type), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np_type), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.3, (16, 5)).astype(np_type), "fc"),
        numpy_helper.from_array(rng.normal(0, 0.1, (5,)).astype(np_type), "fcb"),
        numpy_helper.from_array(np.array([1, 16], np.int64), "flat_shape"),
    ]
    shape = [batch, 3, size, size] if layout == "nchw" else [batch, size, size, 3]
    nodes, x = [], "x"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Reshape", ["g", "flat_shape"], ["f"])
        if reshape_batch
        else helper.make_node("Flatten", ["g"], ["f"]),
    ]
    out = "f"
    if head:
        nodes += [
            helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["prob"]),
        ]
        out = "prob"
    inputs = [helper.make_tensor_value_info("x", dtype, shape)]
    outputs = [helper.make_tensor_value_info(out, dtype, [batch, 5 if head else 16])]
    return _save(nodes, inputs, outputs, inits, path)


def tokens(path, *, size=32, patch=8, width=12, seed=0):
    """A ViT-like tower: patches (a strided Conv) -> (N, T, C) tokens with a class token first -> a MatMul block.
    Its output is the (N, 1 + T, C) token sequence (``hidden``)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (width, 3, patch, patch)).astype(np.float32), "wp"),
        numpy_helper.from_array(rng.normal(0, 1, (1, 1, width)).astype(np.float32), "cls"),
        numpy_helper.from_array(rng.normal(0, 0.3, (width, width)).astype(np.float32), "wm"),
        numpy_helper.from_array(np.array([0, width, -1], np.int64), "seq_shape"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wp"], ["p"], strides=[patch, patch]),
        helper.make_node("Reshape", ["p", "seq_shape"], ["pf"]),  # (N, C, T)
        helper.make_node("Transpose", ["pf"], ["t"], perm=[0, 2, 1]),  # (N, T, C)
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "one", "one"], ["cls_rep"], axis=0),
        helper.make_node("Tile", ["cls", "cls_rep"], ["cls_n"]),
        helper.make_node("Concat", ["cls_n", "t"], ["seq"], axis=1),
        helper.make_node("MatMul", ["seq", "wm"], ["mm"]),
        helper.make_node("Tanh", ["mm"], ["hidden"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])]
    outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", None, width])]
    return _save(nodes, inputs, outputs, inits, path)


def with_outputs(path, names) -> bytes:
    """The model at ``path`` with tensors ``names`` added as outputs (to read them straight from ONNX Runtime)."""
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(
                helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None)
            )
    return model.SerializeToString()


def run_direct(path, names, x: np.ndarray) -> list[np.ndarray]:
    """ONNX Runtime on the user's file itself, tensors ``names`` read out."""
    model = onnx.load(str(path))
    session = ort.InferenceSession(with_outputs(path, names), providers=["CPUExecutionProvider"])
    return session.run(list(names), {model.graph.input[0].name: x})


def torch_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) -> float32 NCHW normalised as torchvision does."""
    x = (images.astype(np.float32) / 255.0 - TORCH_MEAN) / TORCH_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def rapidocr_model(name: str = "ch_ppocr_mobile_v2.0_cls_infer.onnx") -> Path | None:
    """A real ONNX image model from the registry: rapidocr-onnxruntime ships PaddleOCR's models exported by
    Paddle2ONNX (the package is found, never imported: it would import OpenCV)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    return path if path.is_file() else None
