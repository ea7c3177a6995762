"""ONNX model files as backbones: graphs as exporters write them and a real registry model, each checked against
ONNX Runtime run directly on the same preprocessed pixels; declared preprocessing; taps and poolings; safety;
the key; int8, export, fine-tune, predict and the Embedder with them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

import bottleneck as bn
from bottleneck.backbones.onnx_file import read_graph
from bottleneck.backbones.onnx_preprocess import save_onnx_preprocessing
from bottleneck.cli import app
from bottleneck.errors import BackboneError, BottleneckError, ExportError, TuneError
from bottleneck.export import export_run
from bottleneck.tuning import fine_tune
from tests.onnx_models import convnet, cosines, rapidocr_model, run_direct, tokens, torch_pixels

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Textured images (smooth noise) in train/test class folders: 8 per class, 3 classes, 48x40 px."""
    root = tmp_path_factory.mktemp("onnx-data")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(8):
                small = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                small[..., c] = np.clip(small[..., c].astype(int) + 80, 0, 255)
                Image.fromarray(small).resize((48, 40), Image.BILINEAR).save(d / f"{i}.png")
    return root


def _pixels(cache, split="test") -> np.ndarray:
    """The images of a cache's split as the extraction fed them (squash-resized to SIZE), in row order."""
    root = Path(cache.meta["source"])
    ids = cache.ids(split)
    return np.stack(
        [np.asarray(Image.open(root / i).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for i in ids]
    )


def _extract(data, path, tmp_path, **kw):
    kw.setdefault("preprocess", "torch")
    return bn.extract(data, backbone=str(path), cache_dir=tmp_path / "cache", batch_size=4, **kw).cache


@pytest.mark.parametrize(
    "kind",
    ["nchw-free-batch", "nhwc-batch-1", "headless", "reshape-batch-1", "float16"],
)
def test_features_equal_onnx_runtime_run_directly(data, tmp_path, kind):
    """Every exporter shape gives the classifier's input (or the headless output) exactly as ONNX Runtime gives it
    from the user's file on the same preprocessed pixels."""
    path = tmp_path / f"{kind}.onnx"
    layout = "nhwc" if kind == "nhwc-batch-1" else "nchw"
    batch = 1 if "batch-1" in kind else "N"
    dtype = TensorProto.FLOAT16 if kind == "float16" else TensorProto.FLOAT
    convnet(
        path,
        layout=layout,
        batch=batch,
        head=kind != "headless",
        dtype=dtype,
        reshape_batch=kind == "reshape-batch-1",
    )
    lines = []
    cache = _extract(data, path, tmp_path, notify=lines.append)
    got = cache.features("test")[:]
    assert got.shape == (24, 16) and cache.meta["engine"] == "onnx"
    assert read_graph(path).default_taps == ("f",)
    x = torch_pixels(_pixels(cache))
    if layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    x = x.astype(np.float16 if kind == "float16" else np.float32)
    want = np.concatenate([run_direct(path, ["f"], x[i : i + 1])[0] for i in range(len(x))])
    assert cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(
        got, want.astype(np.float32), rtol=2e-2 if kind == "float16" else 1e-4, atol=1e-5
    )
    # a Reshape to (1, 16) cannot run 4 images at once: it runs one at a time, and says so
    fixed = [line for line in lines if "fixed to a batch of 1" in line]
    assert bool(fixed) == (kind == "reshape-batch-1"), lines


def test_taps_and_poolings(data, tmp_path):
    """--layer reads any tensor: a map pooled avg / max or kept (channels last), several joined in order."""
    path = convnet(tmp_path / "m.onnx")
    cache = _extract(data, path, tmp_path, layer="r1,r2", pooling="max")
    x = torch_pixels(_pixels(cache))
    r1, r2 = run_direct(path, ["r1", "r2"], x)
    got = cache.features("test")[:]
    np.testing.assert_allclose(got, np.concatenate([r1.max((2, 3)), r2.max((2, 3))], 1), rtol=1e-4, atol=1e-5)
    assert [c["name"] if isinstance(c, dict) else c[0] for c in cache.meta["layers"]] == ["r1", "r2"]
    kept = _extract(data, path, tmp_path, layer="r2", pooling="none").features("test")[:]
    np.testing.assert_allclose(kept, r2.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    assert kept.shape == (24, 16, 16, 16)


@pytest.mark.parametrize("pooling", ["cls", "mean", "avg", "none"])
def test_token_outputs(data, tmp_path, pooling):
    """A ViT-like (N, tokens, C) output: the class token, the mean of the tokens, or all of them."""
    path = tokens(tmp_path / "vit.onnx")
    cache = _extract(data, path, tmp_path, pooling=pooling)
    (hidden,) = run_direct(path, ["hidden"], torch_pixels(_pixels(cache)))
    want = {"cls": hidden[:, 0], "mean": hidden.mean(1), "avg": hidden.mean(1), "none": hidden}[pooling]
    np.testing.assert_allclose(cache.features("test")[:], want, rtol=1e-4, atol=1e-5)
    assert cache.config.pooling == ("avg" if pooling == "mean" else pooling)  # one cache for both spellings


def test_real_registry_model_paddle2onnx(data, tmp_path):
    """A model no one here wrote: PaddleOCR's text-orientation classifier (Paddle2ONNX; batch -1, free size,
    MatMul + Add + Softmax tail), from the rapidocr-onnxruntime package. Its features are the MatMul's input."""
    path = rapidocr_model()
    if path is None:
        pytest.skip("rapidocr-onnxruntime is not installed (pip install rapidocr-onnxruntime)")
    graph = read_graph(path)
    assert (graph.layout, graph.size, graph.batch) == ("nchw", None, None)
    assert graph.default_taps == ("reshape2_0.tmp_0",)
    with pytest.raises(BackboneError, match="accepts any input size; pass image_size"):
        _extract(data, path, tmp_path, preprocess="tf", channels="bgr")
    cache = _extract(data, path, tmp_path, preprocess="tf", channels="bgr", image_size=SIZE)
    got = cache.features("test")[:]
    pixels = _pixels(cache)
    x = (pixels.astype(np.float32) / 127.5 - 1.0)[..., ::-1].transpose(0, 3, 1, 2)  # PaddleOCR: BGR, [-1, 1]
    (want,) = run_direct(path, ["reshape2_0.tmp_0"], np.ascontiguousarray(x))
    assert got.shape == (24, 200)
    assert cosines(got, want).min() >= 0.9999
    # the same settings through mean / std: the same features, another spelling of the same normalisation
    again = _extract(
        data,
        path,
        tmp_path,
        preprocess=None,
        mean="0.5,0.5,0.5",
        std="0.5,0.5,0.5",
        channels="bgr",
        image_size=SIZE,
    )
    assert cosines(again.features("test")[:], want).min() >= 0.9999


def test_preprocessing_is_declared_never_guessed(data, tmp_path):
    path = convnet(tmp_path / "m.onnx")
    with pytest.raises(BackboneError, match=r"does not say how it expects pixels; pass preprocess="):
        bn.extract(data, backbone=str(path), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("m-*"))
    with pytest.raises(BottleneckError, match=r"looks like 0..255 pixel units.*mean='0.4843,0.4569,0.4078'"):
        bn.extract(data, backbone=str(path), mean="123.5,116.5,104", std="58,57,57", cache_dir=tmp_path / "c")
    with pytest.raises(BackboneError, match="preprocess='torch' and mean=/std= both"):
        bn.extract(data, backbone=str(path), preprocess="torch", mean="0.5,0.5,0.5", std="0.5,0.5,0.5")
    with pytest.raises(BackboneError, match="mean= is given without std="):
        bn.extract(data, backbone=str(path), mean="0.5,0.5,0.5")
    with pytest.raises(BottleneckError, match="apply to an ONNX model file"):
        bn.extract(data, backbone="efficientnet_lite0", mean="0.5,0.5,0.5", std="0.5,0.5,0.5")
    with pytest.raises(BottleneckError, match="pooling='cls'"):
        bn.extract(data, backbone=str(path), preprocess="torch", pooling="cls", cache_dir=tmp_path / "c")


def test_sidecar_carries_the_preprocessing(data, tmp_path):
    """MODEL.onnx.json, written by save_onnx_preprocessing, makes the file self-describing: the same cache as the
    flags, and an explicit flag wins over it."""
    path = convnet(tmp_path / "m.onnx")
    side = save_onnx_preprocessing(path, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert json.loads(side.read_text()) == {"mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
    with pytest.raises(BackboneError, match="exists; pass force=True"):
        save_onnx_preprocessing(path, preprocess="tf")
    by_sidecar = bn.extract(data, backbone=str(path), cache_dir=tmp_path / "c", batch_size=4)
    by_flags = bn.extract(
        data,
        backbone=str(path),
        mean="0.485, 0.456, 0.406",
        std="0.229,0.224,0.225",
        cache_dir=tmp_path / "c",
    )
    assert by_flags.hit and by_flags.cache.key == by_sidecar.cache.key
    torch_mode = _extract(data, path, tmp_path)  # preprocess='torch' given: the flag, not the sidecar
    np.testing.assert_allclose(
        torch_mode.features("test")[:], by_sidecar.cache.features("test")[:], rtol=1e-5
    )
    assert torch_mode.key != by_sidecar.cache.key
    side.write_text('{"preprocess": "torch", "colour": "rgb"}')
    with pytest.raises(BackboneError, match=r"unknown key\(s\) colour"):
        bn.extract(data, backbone=str(path), cache_dir=tmp_path / "c")


def test_key_follows_the_file_content(data, tmp_path):
    path = convnet(tmp_path / "m.onnx", seed=0)
    first = _extract(data, path, tmp_path)
    assert _extract(data, path, tmp_path).key == first.key
    convnet(path, seed=1)  # the same name, other weights
    second = bn.extract(
        data, backbone=str(path), preprocess="torch", cache_dir=tmp_path / "cache", batch_size=4
    )
    assert not second.hit and second.cache.key != first.key
    assert not np.allclose(second.cache.features("test")[:], first.features("test")[:])


def _with_domain(path: Path, domain: str) -> Path:
    model = onnx.load(str(path))
    model.graph.node[0].domain = domain
    model.opset_import.append(helper.make_opsetid(domain, 1))
    onnx.save(model, str(path))
    return path


def test_unsafe_or_broken_files_are_one_line(data, tmp_path):
    custom = _with_domain(convnet(tmp_path / "custom.onnx"), "com.example.ops")
    with pytest.raises(BackboneError, match="custom operators from domain 'com.example.ops'"):
        bn.extract(data, backbone=str(custom), preprocess="torch", cache_dir=tmp_path / "c")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(BackboneError, match="junk.onnx (is not a readable ONNX model|holds no ONNX graph)"):
        bn.extract(data, backbone=str(junk), preprocess="torch", cache_dir=tmp_path / "c")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(BackboneError, match="holds no ONNX graph"):
        bn.extract(data, backbone=str(empty), preprocess="torch", cache_dir=tmp_path / "c")
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as fh:  # sparse: no disk used
        fh.truncate(3 << 30)
    with pytest.raises(BackboneError, match="more than a protobuf can hold"):
        bn.extract(data, backbone=str(huge), preprocess="torch", cache_dir=tmp_path / "c")
    with pytest.raises(BackboneError, match="does not exist"):
        bn.extract(
            data, backbone=str(tmp_path / "missing.onnx"), preprocess="torch", cache_dir=tmp_path / "c"
        )


def _external(path: Path, location: str) -> Path:
    """``path`` saved with its weights in an external file, then its location rewritten to ``location``."""
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(model, str(path))
    return path


def test_external_data_only_from_the_model_folder(data, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    good = _external(convnet(folder / "m.onnx"), "m.onnx.data")
    cache = _extract(data, good, tmp_path)
    assert cache.features("test").shape == (24, 16)
    assert "m.onnx.data:" in json.dumps(cache.meta)  # the weights' file is in the key's material
    bad = _external(convnet(folder / "up.onnx"), "../secret.data")
    (tmp_path / "secret.data").write_bytes(b"x" * 64)
    with pytest.raises(BackboneError, match="outside the model's own folder"):
        bn.extract(data, backbone=str(bad), preprocess="torch", cache_dir=tmp_path / "c")
    absolute = _external(convnet(folder / "abs.onnx"), str(tmp_path / "secret.data"))
    with pytest.raises(BackboneError, match="outside the model's own folder"):
        bn.extract(data, backbone=str(absolute), preprocess="torch", cache_dir=tmp_path / "c")


def test_unknown_layer_and_bad_rank(data, tmp_path):
    path = convnet(tmp_path / "m.onnx")
    with pytest.raises(BackboneError, match=r"layer='relu9' is not a tensor of m.onnx.*--layers"):
        bn.extract(data, backbone=str(path), preprocess="torch", layer="relu9", cache_dir=tmp_path / "c")
    with pytest.raises(BackboneError, match=r"pooling='cls' takes the class token.*'r2' has rank 4"):
        bn.extract(
            data, backbone=str(path), preprocess="torch", layer="r2", pooling="cls", cache_dir=tmp_path / "c"
        )
    with pytest.raises(BackboneError, match="runs on ONNX Runtime; leave out engine='tensorflow'"):
        bn.extract(
            data, backbone=str(path), preprocess="torch", engine="tensorflow", cache_dir=tmp_path / "c"
        )


def test_cli_lists_tensors_and_extracts(data, tmp_path):
    path = convnet(tmp_path / "m.onnx")
    runner = CliRunner()
    res = runner.invoke(app, ["backbones", str(path), "--layers", "--json"])
    assert res.exit_code == 0, res.output
    about = json.loads(res.output)
    assert about["layout"] == "nchw" and about["image_size"] == SIZE and about["top"] == ["f"]
    names = [t["name"] for t in about["tensors"]]
    assert names == ["c1", "r1", "c2", "r2", "g", "f", "logits", "prob"]
    assert next(t for t in about["tensors"] if t["name"] == "r2")["shape"][1:] == [16, 16, 16]
    res = runner.invoke(
        app, ["extract", str(data), "--backbone", str(path), "--cache-dir", str(tmp_path / "c")]
    )
    assert res.exit_code != 0 and res.output.count("\n") == 1
    assert "pass --preprocess" in res.output and "--mean R,G,B" in res.output
    res = runner.invoke(
        app,
        [
            "extract",
            str(data),
            "--backbone",
            str(path),
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.25,0.25,0.25",
            "--channels",
            "bgr",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 0, res.output
    cache = bn.open_cache(res.output.strip().splitlines()[-1])
    assert (cache.config.mean, cache.config.std, cache.config.channels) == (
        "0.5,0.5,0.5",
        "0.25,0.25,0.25",
        "bgr",
    )
    x = ((_pixels(cache).astype(np.float32) / 255 - 0.5) / 0.25)[..., ::-1].transpose(0, 3, 1, 2)
    (want,) = run_direct(path, ["f"], np.ascontiguousarray(x))
    assert cosines(cache.features("test")[:], want).min() >= 0.9999


def test_heads_export_predict_and_refusals(data, tmp_path):
    """fit-head and predict run on it; export --format onnx joins the user's graph and the head into one file
    that ONNX Runtime alone scores like predict; Keras formats and fine-tuning say why not."""
    path = convnet(tmp_path / "m.onnx")
    cache = _extract(data, path, tmp_path)
    run = bn.fit_head(cache, "logreg", out=tmp_path / "run")
    record = export_run(run.path, format="onnx")
    assert record["verification"]["max_difference"] <= 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(record["path"], providers=["CPUExecutionProvider"])
    pixels = _pixels(cache)
    got = session.run(None, {"images": pixels})[0]
    want = run.head.predict_proba(cache.features("test")[:])
    np.testing.assert_allclose(got, want, atol=1e-4)
    ids = cache.ids("test")[:3]
    predicted = bn.predict_images(run.path, [str(Path(data) / i) for i in ids], top=1)
    exported = bn.predict_images(record["path"], [str(Path(data) / i) for i in ids], top=1)
    for p, e, row in zip(predicted, exported, want[:3], strict=True):
        assert p["top"][0]["prob"] == pytest.approx(row.max(), abs=1e-4)
        assert e["top"][0]["prob"] == pytest.approx(row.max(), abs=1e-4)
    with pytest.raises(ExportError, match="ONNX model file .* export it with format='onnx'"):
        export_run(run.path, format="keras", out=tmp_path / "m.keras")
    with pytest.raises(TuneError, match="cannot train; compare heads on its features"):
        fine_tune(run.path)


def test_embedder_gives_the_cache_features(data, tmp_path):
    path = convnet(tmp_path / "m.onnx")
    cache = _extract(data, path, tmp_path)
    embedder = bn.Embedder(backbone=str(path), preprocess="torch", cache_dir=tmp_path / "cache")
    got = embedder.transform(_pixels(cache))
    np.testing.assert_allclose(got, cache.features("test")[:], rtol=1e-4, atol=1e-5)


def _resnet_like(path: Path) -> Path:
    """A small residual ConvNet in NCHW with a classifier tail, like a torchvision export."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(
            rng.normal(0, (2 / np.prod(shape[1:])) ** 0.5, shape).astype(np.float32), name
        )

    inits = [w("w0", 16, 3, 3, 3), w("w1", 16, 16, 3, 3), w("w2", 16, 16, 3, 3), w("fc", 16, 10)]
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fcb"))
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1"], ["a1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["a2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a2", "r0"], ["res"]),
        helper.make_node("Relu", ["res"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "resnetish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_int8_on_a_user_graph(data, tmp_path):
    """--precision int8 quantizes the feature model of the user's graph, calibrated on train images; its
    features agree with fp32 ones, and a run on them exports as one ONNX file too."""
    path = _resnet_like(tmp_path / "resnetish.onnx")
    fp32 = _extract(data, path, tmp_path)
    int8 = _extract(data, path, tmp_path, precision="int8", calibration=16)
    assert int8.key != fp32.key and int8.meta["engine"] == "onnx-int8"
    assert cosines(int8.features("test")[:], fp32.features("test")[:]).mean() >= 0.95
    assert int8.meta["int8"]["mean_cosine"] >= 0.95
    run = bn.fit_head(int8, "logreg", out=tmp_path / "run8")
    record = export_run(run.path, format="onnx")
    assert record["verification"]["max_difference"] <= 1e-4


def test_advise_measures_an_onnx_file(data, tmp_path):
    """advise scores the file's features against the pixels and prints commands that carry its preprocessing;
    its fine-tune candidate says why it cannot run."""
    from bottleneck.runs.advise import advise
    from bottleneck.runs.recommendation import commands

    path = convnet(tmp_path / "m.onnx")
    advice = advise(
        data,
        backbone=str(path),
        preprocess="torch",
        per_class=6,
        fine_tune=True,  # asked for on a pilot this small, so that it says why it cannot run
        cache_dir=tmp_path / "c",
        runs_dir=tmp_path / "r",
    )
    text = advice.markdown()
    assert "| top layer" in text and "| pixels" in text, text
    assert "reads features of an ONNX model file" in text
    assert (tmp_path / "r" / f"advise-{data.name}-m" / "advice.md").is_file()
    # the commands that build the recommendation on the whole data carry the declared preprocessing
    rec = {"backbone": str(path), "layer": None, "fine_tune": False}
    names = {"backbone": str(path), "preprocess": "torch", "mean": None}
    assert f"--backbone {path} --preprocess torch)" in commands(data, rec, names)[0]


@pytest.mark.slow
def test_dask_cluster_computes_the_same_features(data, tmp_path):
    path = convnet(tmp_path / "m.onnx")
    local = _extract(data, path, tmp_path / "local")
    remote = bn.extract(
        data,
        backbone=str(path),
        preprocess="torch",
        cache_dir=tmp_path / "dask",
        batch_size=4,
        cluster="local:1",
    ).cache
    assert remote.key == local.key
    np.testing.assert_array_equal(remote.features("train")[:], local.features("train")[:])


def test_int8_of_a_graph_fixed_to_one_image(data, tmp_path):
    """A graph that runs only one image at a time is calibrated and run one image at a time in int8 too."""
    path = convnet(tmp_path / "one.onnx", batch=1, reshape_batch=True)
    fp32 = _extract(data, path, tmp_path)
    int8 = _extract(data, path, tmp_path, precision="int8", calibration=8, accept_drift=True)
    assert int8.features("test").shape == fp32.features("test").shape == (24, 16)
    assert cosines(int8.features("test")[:], fp32.features("test")[:]).mean() >= 0.9
    engines = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "engines").glob("one-*.onnx")}
    embedder = bn.Embedder(backbone=str(path), preprocess="torch", cache_dir=tmp_path / "cache")
    got = embedder.transform(_pixels(fp32))  # the feature model made by the extraction is reused as it is
    np.testing.assert_allclose(got, fp32.features("test")[:], rtol=1e-4, atol=1e-5)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "engines").glob("one-*.onnx")} == engines


def test_compare_inspect_and_similar_on_an_onnx_cache(data, tmp_path):
    """The jobs on a cache need nothing of the backbone but its settings: compare, inspect (its pixel check reads
    the source) and similar (an image query embedded with the cache's settings, mean/std included)."""
    from bottleneck.inspection import find_similar

    path = convnet(tmp_path / "m.onnx")
    cache = _extract(data, path, tmp_path, preprocess=None, mean="0.5,0.5,0.5", std="0.25,0.25,0.25")
    table = bn.compare([cache], heads=("logreg",))
    assert [r["head"] for r in table.rows] == ["logreg"] and 0 <= table.rows[0]["accuracy_mean"] <= 1
    report = bn.inspect_cache(cache, out=tmp_path / "inspect", label_errors=False)
    assert report.summary["backbone"] == str(path) and (tmp_path / "inspect" / "index.html").is_file()
    query = Path(data) / cache.ids("test")[5]
    hits = find_similar(cache, image=query, k=1, cache_dir=tmp_path / "cache")
    assert hits[0]["id"] == cache.ids("test")[5] and hits[0]["cosine"] == pytest.approx(1, abs=1e-4)
