"""Export: every format round-trips against `predict`, carries its class names, and loads without bottleneck."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import run_python
from test_fine_tune import frozen_run  # noqa: F401 (a fixture)


@pytest.mark.parametrize("fmt", ["keras", "onnx", "savedmodel", "tflite"])
def test_each_format_round_trips(frozen_run, tmp_path, fmt):  # noqa: F811
    from bottleneck.export import export_run, load_exported
    from bottleneck.runs import predict_images

    run, cache, data, _ = frozen_run
    out = tmp_path / {"keras": "m.keras", "onnx": "m.onnx", "savedmodel": "m", "tflite": "m.tflite"}[fmt]
    record = export_run(run, out, format=fmt)
    assert record["verification"]["images"] == 16 and record["verification"]["max_difference"] <= 1e-4
    assert json.loads((tmp_path / f"{out.name}.json").read_text())["verification"] == record["verification"]
    names = list(cache.class_names)
    if fmt == "keras":
        with zipfile.ZipFile(out) as zf:
            assert json.loads(zf.read("bottleneck.json"))["class_names"] == names
    elif fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(props["class_names"]) == names
    elif fmt == "savedmodel":
        from bottleneck import _tf

        loaded = _tf.tensorflow().saved_model.load(str(out))
        assert [n.decode() for n in loaded.class_names[0].numpy()] == names
    else:
        assert (tmp_path / "m.labels.txt").read_text().split() == names
    model = load_exported(out)
    assert model.image_size == 32 and model.class_names == names
    images = sorted((data / "test").rglob("*.png"))[::4]
    want = predict_images(run, images, top=3)
    got = predict_images(out, images, top=3)
    for w, g in zip(want, got, strict=True):
        assert [t["class"] for t in w["top"]] == [t["class"] for t in g["top"]]
        assert np.allclose([t["prob"] for t in w["top"]], [t["prob"] for t in g["top"]], atol=1e-4)


def test_keras_file_loads_with_plain_keras(frozen_run, tmp_path):  # noqa: F811
    from bottleneck.export import export_run

    run, _, data, _ = frozen_run
    out = tmp_path / "m.keras"
    export_run(run, out)
    image = sorted((data / "test").rglob("*.png"))[0]
    code = f"""
import sys, json, zipfile
import numpy as np, keras
from PIL import Image
m = keras.saving.load_model({str(out)!r})
names = json.loads(zipfile.ZipFile({str(out)!r}).read("bottleneck.json"))["class_names"]
x = np.asarray(Image.open({str(image)!r}).convert("RGB").resize((32, 32)), np.uint8)[None]
p = m.predict(x, verbose=0)
assert "bottleneck" not in sys.modules
print(names[int(p.argmax())], round(float(p.sum()), 4))
"""
    out_text = run_python(code)
    assert out_text.strip().split()[-1] == "1.0"
    assert out_text.strip().split()[-2] in ("a", "b", "c")
