"""Export: every head, frozen and fine-tuned, in every format, verified against `predict`; class names that
survive any folder name; the loading recipes of docs/how-to/export.md run as written, without bottleneck."""

from __future__ import annotations

import ast
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python
from tuning_data import make_model_file, noisy_images
from typer.testing import CliRunner

import bottleneck
from bottleneck.errors import ExportError

# Class folder names with a space, a newline, non-ASCII letters and a comma: what a labels file must survive.
NAMES = ("sp ace", "new\nline", "ünï,cödé")
HEADS = ("logreg", "linear", "mlp", "sigmoid", "pool-dense")
FORMATS = ("keras", "onnx", "savedmodel", "tflite")
FILES = {"keras": "model.keras", "onnx": "model.onnx", "savedmodel": "model", "tflite": "model.tflite"}
PARAMS = {"logreg": {}, "mlp": {"width": 16, "epochs": 3}, "pool-dense": {"width": 16, "epochs": 3}}
EXPORT_PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "export.md"


class Runs:
    """Runs of every head on one tiny model-file backbone (32 px, random weights), each fitted or fine-tuned
    on first use and shared by the module: 3 classes named ``NAMES``, 2 (``no``, ``yes``) for sigmoid, and a
    ``pooling="none"`` cache for pool-dense."""

    def __init__(self, root: Path):
        self.root = root
        self.model_file = make_model_file(root / "tiny.keras")
        self.data = {"three": noisy_images(root / "three", classes=NAMES)}
        self.data["two"] = noisy_images(root / "two", classes=("no", "yes"), seed=1)
        self._caches: dict = {}
        self._runs: dict = {}

    def cache(self, head: str):
        data = "two" if head == "sigmoid" else "three"
        pooling = "none" if head == "pool-dense" else "avg"
        if (data, pooling) not in self._caches:
            self._caches[data, pooling] = bottleneck.extract(
                self.data[data],
                cache_dir=self.root / "cache",
                backbone=str(self.model_file),
                preprocess="tf",
                engine="tensorflow",
                pooling=pooling,
            ).cache
        return self._caches[data, pooling]

    def test_images(self, head: str) -> list[Path]:
        return sorted((self.data["two" if head == "sigmoid" else "three"] / "test").rglob("*.png"))

    def run(self, head: str, tuned: bool):
        if (head, tuned) in self._runs:
            return self._runs[head, tuned]
        if tuned:
            from bottleneck.tuning import fine_tune

            run = fine_tune(
                self.run(head, False),
                unfreeze_from="block3_conv",
                epochs=1,
                lr=1e-2,
                out=self.root / "ft" / head,
            )
        else:
            from bottleneck.runs import fit_head

            params = PARAMS.get(head, {"epochs": 3})
            run = fit_head(self.cache(head), head, params=params, out=self.root / "runs" / head)
        self._runs[head, tuned] = run
        return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("export-matrix"))


def names_in_file(out: Path, fmt: str) -> list[str]:
    """The class names where each format keeps them, read without bottleneck."""
    if fmt == "keras":
        with zipfile.ZipFile(out) as zf:
            return json.loads(zf.read("bottleneck.json"))["class_names"]
    if fmt == "onnx":
        import onnx

        return json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["class_names"])
    if fmt == "savedmodel":
        from bottleneck import _tf

        loaded = _tf.tensorflow().saved_model.load(str(out))
        return [n.decode() for n in loaded.class_names[0].numpy()]
    return json.loads(out.with_name(out.name + ".json").read_text())["class_names"]


def check_export(runs: Runs, head: str, tuned: bool, fmt: str, tmp_path: Path) -> None:
    """Export one matrix cell and check it as a user would: verified on write, names in the file, and the
    file's predictions (through `bottleneck predict FILE`) equal the run's on every test image."""
    from bottleneck.export import export_run, load_exported
    from bottleneck.runs import predict_images

    run = runs.run(head, tuned)
    names = list(runs.cache(head).class_names)
    images = runs.test_images(head)
    out = tmp_path / FILES[fmt]
    record = export_run(run, out, format=fmt)
    assert record["fine_tuned"] is tuned and record["head"] == head
    cache = runs.cache(head)
    # 16 images: the test split's, topped up from val and train when it has fewer
    assert record["verification"]["images"] == min(16, sum(cache.n(s) for s in cache.splits))
    assert record["verification"]["max_difference"] <= 1e-4
    assert json.loads((tmp_path / f"{out.name}.json").read_text())["class_names"] == names
    assert names_in_file(out, fmt) == names
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(out)).graph
        assert [i.name for i in graph.input] == ["images"]
        assert [o.name for o in graph.output] == ["probabilities"]
    model = load_exported(out)
    assert model.image_size == 32 and model.class_names == names
    want = predict_images(run, images, top=len(names))
    got = predict_images(out, images, top=len(names))
    for w, g in zip(want, got, strict=True):
        # By class: two classes within 1e-4 of each other may rank either way (a calibrated model's are often close).
        wp, gp = ({t["class"]: t["prob"] for t in x["top"]} for x in (w, g))
        assert set(wp) == set(gp) == set(names)
        np.testing.assert_allclose([gp[c] for c in names], [wp[c] for c in names], atol=1e-4)
        if w["top"][0]["prob"] - w["top"][1]["prob"] > 1e-4:
            assert g["top"][0]["class"] == w["top"][0]["class"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("head", HEADS)
def test_frozen_run_exports(runs, head, fmt, tmp_path):
    check_export(runs, head, False, fmt, tmp_path)


# The fine-tuned half doubles the matrix's time (about 75 s more on 2 cores): slow, but for the cell that crashed
# before the ONNX fix (a fine-tuned mlp: Normalization constants as ONNX inputs).
TUNED_CELLS = [
    pytest.param(head, fmt, marks=() if (head, fmt) == ("mlp", "onnx") else pytest.mark.slow)
    for head in HEADS
    for fmt in FORMATS
]


@pytest.mark.parametrize(("head", "fmt"), TUNED_CELLS)
def test_fine_tuned_run_exports(runs, head, fmt, tmp_path):
    check_export(runs, head, True, fmt, tmp_path)


def export_page_recipes() -> dict[str, str]:
    """The export-loading snippets of docs/how-to/export.md by format: the ```python blocks opening with ``# model.<ext>``."""
    blocks = re.findall(r"```python\n(# (model\S*).*?)```", EXPORT_PAGE.read_text(), re.S)
    by_file = {name.rstrip(":"): code for code, name in blocks}
    return {fmt: by_file[FILES[fmt] + ("/" if fmt == "savedmodel" else "")] for fmt in FORMATS}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """The logreg run exported in every format into one folder, with one test image of class ``new\nline``
    (``photo.png``): where a user would run those snippets."""
    from bottleneck.export import export_run

    folder = tmp_path_factory.mktemp("exported")
    run = runs.run("logreg", False)
    for fmt in FORMATS:
        export_run(run, folder / FILES[fmt], format=fmt)
    shutil.copy(
        next(p for p in runs.test_images("logreg") if p.parent.name == NAMES[1]), folder / "photo.png"
    )
    return folder


# Each snippet imports its runtime cold (TensorFlow: about 10 s); the SavedModel one adds nothing the others miss.
@pytest.mark.parametrize(
    "fmt", [f if f != "savedmodel" else pytest.param(f, marks=pytest.mark.slow) for f in FORMATS]
)
def test_export_page_recipe_runs_alone_and_maps_names_right(runs, exported, fmt):
    """The snippet, copied alone into a fresh interpreter beside the exported file, loads it, reads the class
    names and prints {name: probability}: the run's names in its order, each with the probability `bottleneck
    predict` gives that class, the image's own class first. bottleneck is never imported."""
    from bottleneck.runs import predict_images

    image = exported / "photo.png"
    (want,) = predict_images(runs.run("logreg", False), [image], top=len(NAMES))
    assert want["top"][0]["class"] == NAMES[1]
    code = export_page_recipes()[fmt].replace('"photo.jpg"', repr(str(image)))
    # bottleneck made unimportable: the snippet must not need it (pandas, which Keras may import, would otherwise
    # import this package as its optional accelerator).
    out = run_python(
        f"import os, sys\nsys.modules['bottleneck'] = None\nos.chdir({str(exported)!r})\n{code}\n"
    )
    printed = ast.literal_eval(out.strip().splitlines()[-1])
    assert list(printed) == list(runs.cache("logreg").class_names)
    assert max(printed, key=printed.get) == NAMES[1]
    np.testing.assert_allclose(
        [printed[t["class"]] for t in want["top"]], [t["prob"] for t in want["top"]], atol=1e-4
    )


def test_tflite_names_survive_any_folder_name(runs, tmp_path):
    """The old labels file (one name per line) gave 4 lines and 5 words for these 3 names; the JSON beside the
    file reads back in output order. A labels file of that name is left alone: nothing proves it is ours."""
    from bottleneck.export import export_run, load_exported
    from bottleneck.runs import predict_images

    out = tmp_path / "model.tflite"
    (tmp_path / "model.labels.txt").write_text("".join(f"{n}\n" for n in ("x", "y", "z")))
    export_run(runs.run("logreg", False), out, format="tflite")
    assert (tmp_path / "model.labels.txt").read_text() == "x\ny\nz\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.labels.txt",
        "model.tflite",
        "model.tflite.json",
    ]
    names = json.loads((tmp_path / "model.tflite.json").read_text())["class_names"]
    assert names == sorted(NAMES) == list(runs.cache("logreg").class_names)
    assert load_exported(out).class_names == names
    images = runs.test_images("logreg")
    got = predict_images(out, images, top=1)
    hits = [g["top"][0]["class"] == p.parent.name for g, p in zip(got, images, strict=True)]
    assert np.mean(hits) >= 0.9, hits


def test_a_format_that_cannot_hold_the_model_names_one_that_can(tmp_path):
    """A model file with one of bottleneck's own layers (AlexNet's LRN): .keras would need bottleneck to load,
    so it is refused in one line naming onnx and savedmodel, and onnx then holds the same run."""
    from bottleneck import _tf
    from bottleneck.backbones.arch.alexnet import layer_classes
    from bottleneck.cli import app
    from bottleneck.export import export_run
    from bottleneck.runs import fit_head

    keras = _tf.keras()
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv", kernel_initializer=keras.initializers.HeNormal(1))(
        inp
    )
    x = layer_classes()["lrn"](name="lrn")(x)
    keras.Model(inp, x).save(tmp_path / "lrn.keras")
    data = noisy_images(tmp_path / "data", per_split={"train": 6, "val": 3, "test": 3})
    cache = bottleneck.extract(
        data,
        cache_dir=tmp_path / "cache",
        backbone=str(tmp_path / "lrn.keras"),
        preprocess="tf",
        engine="tensorflow",
    ).cache
    run = fit_head(cache, "logreg", runs_dir=tmp_path / "runs")
    with pytest.raises(
        ExportError, match=r"LocalResponseNormalization.*format='onnx' or format='savedmodel'"
    ):
        export_run(run, tmp_path / "m.keras", format="keras")
    assert not (tmp_path / "m.keras").exists()
    res = CliRunner().invoke(
        app, ["export", str(run.path), "--format", "keras", "--out", str(tmp_path / "m.keras")]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert "onnx" in res.output and "savedmodel" in res.output
    assert export_run(run, tmp_path / "m.onnx", format="onnx")["verification"]["max_difference"] <= 1e-4


def test_normalization_constants_are_not_onnx_inputs():
    """The root cause of the mlp crash, alone: a Keras Normalization layer (mean and variance held as constant
    tensors, which tf2onnx's from_function declared as graph inputs) converts to a one-input ONNX graph."""
    import onnxruntime as ort

    from bottleneck import _tf
    from bottleneck._onnx import function_to_onnx

    tf, keras = _tf.tensorflow(), _tf.keras()
    inp = keras.Input((4,))
    x = keras.layers.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 4.0, 9.0, 16.0])(inp)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    sig = [tf.TensorSpec([None, 4], tf.float32, name="images")]
    fn = tf.function(lambda t: model(t, training=False), input_signature=sig)
    proto = function_to_onnx(fn, sig, input_name="images", output_name="probabilities")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    X = np.random.default_rng(0).normal(3, 4, (5, 4)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"images": X})[0], model.predict_on_batch(X), atol=1e-6)
