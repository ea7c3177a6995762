"""An ONNX model file (a PyTorch, Paddle or TensorFlow export) as a backbone: what its graph takes and gives (layout,
size, batch, dtype, the tensors it can be tapped at, a classifier's input), checked for safety before anything runs;
``resolve`` makes a config's file settings explicit (its preprocessing from ``onnx_preprocess``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from bottleneck._io import file_hash
from bottleneck.backbones.onnx_preprocess import (
    check_preprocessing,
    is_onnx_path,
    parse_triple,
    read_sidecar,
    sidecar_path,
)
from bottleneck.errors import BackboneError, first_line

# A single protobuf cannot be larger: bigger models keep their weights in external data files.
MAX_PROTO_BYTES = 2 << 30
# Operator domains ONNX Runtime runs without an extension library (com.microsoft: its own contrib ops, which
# optimum and onnxruntime-tools exports use for fused attention).
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
FLOAT_TYPES = {1: "float32", 10: "float16"}  # ONNX TensorProto element types of an image input we can feed
# Ops after a classifier's matrix product that keep its input the features (walked back from the output).
_CLASSIFIER_TAIL = frozenset({"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Add", "Flatten", "Reshape"})


@dataclass(frozen=True)
class Tensor:
    """A tensor of the graph that features can be read from."""

    name: str
    shape: tuple  # ints, names of dynamic dimensions, or None where unknown
    dtype: str
    op: str  # the op that makes it ("input" for the graph input)


@dataclass(frozen=True)
class OnnxGraph:
    """What an ONNX model file takes and gives, read once from its graph (no ONNX Runtime session)."""

    path: Path
    input_name: str
    layout: str  # "nchw" (PyTorch, Paddle exports) | "nhwc" (tf2onnx exports)
    size: int | None  # the square side the graph fixes; None when height and width are free
    batch: int | None  # the batch the graph fixes (1 for many PyTorch exports); None when free
    dtype: str  # float32 | float16
    outputs: tuple[str, ...]
    classifier_input: str | None  # the tensor a classifier tail (Gemm / MatMul [+ Add] [+ Softmax]) reads
    tensors: dict = field(repr=False)  # name -> Tensor: every tensor features can be read from
    digest: str = ""  # sha256 of the file and of its external data files
    opset: int = 0

    @property
    def default_taps(self) -> tuple[str, ...]:
        """The features a user means: a classifier's input, else the graph's (first) output."""
        return (self.classifier_input or self.outputs[0],)

    def taps(self, layer: str | None) -> tuple[str, ...]:
        """The tensor names of a ``layer`` value ("a,b"; "top" or None: the default), each checked to exist."""
        if layer is None:
            return self.default_taps
        names = []
        for name in (n.strip() for n in layer.split(",")):
            if name == "top":
                names += [t for t in self.default_taps if t not in names]
            elif name in self.tensors:
                names.append(name)
            else:
                near = sorted(n for n in self.tensors if name.lower() in n.lower())[:5]
                hint = f" (names containing it: {', '.join(near)})" if near else ""
                raise BackboneError(
                    f"layer={name!r} is not a tensor of {self.path.name}{hint}; `bottleneck backbones "
                    f"{self.path} --layers` lists the tensors features can be read from."
                )
        return tuple(names)

    def rank(self, name: str) -> int | None:
        shape = self.tensors[name].shape
        return None if shape is None else len(shape)


def _dims(value_info) -> tuple | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:  # Paddle writes -1 for a free dimension
            out.append(d.dim_param or None)
    return tuple(out)


def _external_files(model, folder: Path) -> list[Path]:
    """The external data files a model names, each checked to lie in the model's own folder."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    files = []
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        rel = Path(location)
        if not location or rel.is_absolute() or ".." in rel.parts:
            raise BackboneError(
                f"{folder} model's tensor {tensor.name!r} keeps its data at {location!r}, outside the model's own "
                "folder; bottleneck reads external data only from files beside the model (e.g. model.onnx.data)."
            )
        path = folder / rel
        if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
            raise BackboneError(
                f"the external data file {location!r} of tensor {tensor.name!r} is not a file in {folder} "
                "(missing, a link out of the folder, or not a regular file); put the model's .data file beside it."
            )
        if path not in files:
            files.append(path)
    return files


def load_model(path, *, with_data: bool = False):
    """The model proto of ``path`` after the safety checks: a regular file under 2 GiB that parses as an ONNX model
    with a graph, only standard operator domains, external data only from its own folder. ``with_data``: the
    external data loaded into it (for writing a changed graph)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file"
        raise BackboneError(f"ONNX model {path} {what}; pass the path of a .onnx file or a registry name.")
    size = path.stat().st_size
    if size > MAX_PROTO_BYTES:
        raise BackboneError(
            f"{path} is {size / 2**30:.1f} GiB, more than a protobuf can hold (2 GiB); save it with its weights "
            "in a data file beside it: onnx.save(model, path, save_as_external_data=True)."
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise BackboneError(
            f"{path} is not a readable ONNX model ({first_line(exc, with_type=True, limit=120)}); export it again "
            "(torch.onnx.export, tf2onnx, paddle2onnx)."
        ) from None
    if not len(model.graph.node) or not len(model.graph.input) or not len(model.graph.output):
        raise BackboneError(
            f"{path} holds no ONNX graph (no nodes, inputs or outputs: truncated, or another kind of file); "
            "export the model again."
        )
    local = {f.domain for f in model.functions}
    custom = sorted(
        {n.domain for n in _all_nodes(model.graph)} - STANDARD_DOMAINS - local,
    )
    if custom:
        raise BackboneError(
            f"{path} uses custom operators from domain {', '.join(repr(d) for d in custom)}, which need a compiled "
            "extension library that bottleneck does not load; export the model with standard ONNX operators only."
        )
    files = _external_files(model, path.parent)
    if with_data and files:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


def _all_nodes(graph):
    """Every node of a graph and of the subgraphs in its nodes' attributes (If, Loop, Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _all_nodes(sub)


def model_digest(path) -> str:
    """sha256 of the model file, and of its external data files in order (the weights' identity in the key)."""
    path = Path(path)
    files = _external_files(load_model(path), path.parent)
    digest = file_hash(path)
    if not files:
        return digest
    return "+".join([digest, *(f"{f.name}:{file_hash(f)}" for f in files)])


def read_graph(path) -> OnnxGraph:
    """The OnnxGraph of a model file (read again when the file changes)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        st = None
    return _read_graph(str(path), st and (st.st_size, st.st_mtime_ns, st.st_ino))


@functools.lru_cache(maxsize=8)
def _read_graph(path: str, _stamp) -> OnnxGraph:
    import onnx

    path = Path(path)
    model = load_model(path)
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]  # IR < 4 lists initializers as inputs too
    if len(inputs) != 1:
        raise BackboneError(
            f"{path} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a backbone takes one "
            "image tensor: export the image tower alone (e.g. CLIP's vision model)."
        )
    image = inputs[0]
    dtype = FLOAT_TYPES.get(image.type.tensor_type.elem_type)
    if dtype is None:
        raise BackboneError(
            f"{path} takes {onnx.helper.tensor_dtype_to_np_dtype(image.type.tensor_type.elem_type)} input; "
            "bottleneck feeds float32 or float16 images: export the model with a float input."
        )
    shape = _dims(image)
    if shape is None or len(shape) != 4:
        raise BackboneError(
            f"{path} takes input of shape {shape}; a backbone takes a batch of images (N, 3, H, W) or (N, H, W, 3)."
        )
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an op shape inference does not know: tensors keep what the file says
        inferred = model
    layout = _layout(inferred.graph, shape, path)
    channels = shape[1] if layout == "nchw" else shape[3]
    if channels not in (3, None):
        raise BackboneError(
            f"{path} takes {channels}-channel images; bottleneck feeds RGB (3 channels): export a 3-channel model."
        )
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    fixed = [d for d in (h, w) if isinstance(d, int)]
    if len(fixed) == 2 and h != w:
        raise BackboneError(
            f"{path} takes {h}x{w} images; bottleneck feeds square images: export it with a square input "
            "(or free height and width)."
        )
    return OnnxGraph(
        path=path,
        input_name=image.name,
        layout=layout,
        size=h if len(fixed) == 2 else None,
        batch=shape[0] if isinstance(shape[0], int) else None,
        dtype=dtype,
        outputs=tuple(o.name for o in model.graph.output),
        classifier_input=_classifier_input(model.graph, init),
        tensors=_tensors(inferred.graph, image, init),
        digest=model_digest(path),
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
    )


def _layout(graph, shape: tuple, path: Path) -> str:
    if shape[1] == 3 and shape[3] != 3:
        return "nchw"
    if shape[3] == 3 and shape[1] != 3:
        return "nhwc"
    # Both free (or both 3): what reads the input first tells. tf2onnx transposes NHWC input to NCHW for Conv.
    first = next((n for n in graph.node if graph.input[0].name in n.input), None)
    if first is not None and first.op_type == "Conv":
        return "nchw"
    if first is not None and first.op_type == "Transpose":
        perm = next((list(a.ints) for a in first.attribute if a.name == "perm"), [])
        if perm == [0, 3, 1, 2]:
            return "nhwc"
    raise BackboneError(
        f"cannot tell whether {path} takes (N, 3, H, W) or (N, H, W, 3) images (its channel dimension is free); "
        "export it with the channel dimension fixed to 3."
    )


def _classifier_input(graph, init: set[str]) -> str | None:
    """The input of a classifier tail: walked back from the first output over Softmax / Add / Identity to a Gemm or
    MatMul with a constant weight matrix. None for a headless graph."""
    producer = {o: n for n in graph.node for o in n.output}
    constants = init | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    name = graph.output[0].name
    for _ in range(8):
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in constants:
            source = node.input[0]
            # the features are the vector before a Flatten / Reshape that feeds the product, when that is (N, C)
            return source
        if node.op_type not in _CLASSIFIER_TAIL or node.op_type in ("Flatten", "Reshape"):
            return None
        data = [i for i in node.input if i not in constants]
        if len(data) != 1:
            return None
        name = data[0]
    return None


def _tensors(graph, image, init: set[str]) -> dict:
    """Every float tensor of the top graph with a batch dimension: the input, node outputs and the outputs."""
    infos = {v.name: v for v in [*graph.value_info, *graph.output]}
    producer = {o: n.op_type for n in graph.node for o in n.output}
    out = {
        image.name: Tensor(image.name, _dims(image), FLOAT_TYPES[image.type.tensor_type.elem_type], "input")
    }
    for node in graph.node:
        for name in node.output:
            if not name or name in init or name in out:
                continue
            info = infos.get(name)
            if info is None:  # shape inference could not say: still tappable, its shape read at run time
                out[name] = Tensor(name, None, "float32", producer[name])
                continue
            elem = info.type.tensor_type.elem_type
            if elem not in FLOAT_TYPES:
                continue
            shape = _dims(info)
            if shape is not None and len(shape) < 2:
                continue
            out[name] = Tensor(name, shape, FLOAT_TYPES[elem], producer[name])
    return out


def resolve(config):
    """An ExtractConfig of an ONNX model file with its declared settings made explicit (the graph's fixed input
    size, the sidecar's preprocessing where the call gave none), checked; other configs as they are."""
    if not is_onnx_path(config.backbone):
        return config
    path = config.backbone
    graph = read_graph(path)
    changes = {}
    given = check_preprocessing(path, config.preprocess, config.mean, config.std, config.channels)
    side = read_sidecar(path)
    if given is None and side:
        mean, std = parse_triple("mean", side.get("mean")), parse_triple("std", side.get("std"))
        preprocess = side.get("preprocess")
        given = check_preprocessing(str(sidecar_path(path)), preprocess, mean, std, side.get("channels"))
        if given is not None:
            changes.update(zip(("preprocess", "mean", "std", "channels"), given, strict=True))
    if given is None:
        raise BackboneError(
            f"{path} does not say how it expects pixels; pass preprocess= (torch: timm / torchvision ImageNet "
            "models; tf: [-1, 1]; caffe; 127; none) or mean='R,G,B' and std='R,G,B' on 0..1 pixels (with "
            f"channels='bgr' if it takes BGR), or declare them in {sidecar_path(path).name} "
            "(bottleneck.save_onnx_preprocessing)."
        )
    size = config.image_size or side.get("image_size")
    if graph.size is not None and size not in (None, graph.size):
        raise BackboneError(
            f"{path} takes {graph.size}-pixel images, not image_size={size}; leave image_size out."
        )
    size = size or graph.size
    if size is None:
        raise BackboneError(
            f"{path} accepts any input size; pass image_size (e.g. image_size=224, the size it was trained at)."
        )
    changes["image_size"] = int(size)
    if config.weights != "imagenet":
        raise BackboneError(
            f"weights={config.weights!r} does not apply to an ONNX model file ({path}): it carries its own "
            "weights; leave weights out."
        )
    if config.engine == "tensorflow" or config.xla:
        raise BackboneError(
            f"{path} runs on ONNX Runtime; leave out {'engine=' + repr(config.engine) if not config.xla else 'xla=True'}."
        )
    taps = graph.taps(config.layer)
    ranks = {t: graph.rank(t) for t in taps}
    if config.pooling == "cls" and any(r not in (3, None) for r in ranks.values()):
        bad = next(t for t, r in ranks.items() if r not in (3, None))
        raise BackboneError(
            f"pooling='cls' takes the class token of a (N, tokens, C) output, and {bad!r} has rank {ranks[bad]}; "
            "use pooling='avg'."
        )
    wrong = [t for t, r in ranks.items() if r is not None and not 2 <= r <= 4]
    if wrong:
        raise BackboneError(
            f"{wrong[0]!r} has rank {ranks[wrong[0]]}; features are read from (N, C), (N, tokens, C) or image "
            "maps: choose another tensor (`bottleneck backbones MODEL.onnx --layers`)."
        )
    return config.replace(**changes) if any(getattr(config, k) != v for k, v in changes.items()) else config


def describe_tensors(path) -> list[dict]:
    """The tensors of an ONNX model features can be read from, in graph order: name, shape, op, and which one
    ``top`` (the default) is. For `bottleneck backbones MODEL.onnx --layers`."""
    graph = read_graph(path)
    default = set(graph.default_taps)
    return [
        {
            "name": t.name,
            "shape": [d if d is not None else "?" for d in t.shape] if t.shape is not None else None,
            "op": t.op,
            "top": t.name in default,
        }
        for t in graph.tensors.values()
        if t.op != "input"
    ]
