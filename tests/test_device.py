"""Where the backbone runs: the ONNX Runtime providers asked for per device, one-line errors when a GPU is asked
for and absent, and (on a machine with one) GPU features equal to CPU features within the engines' tolerance."""

import importlib.util

import numpy as np
import pytest
from conftest import make_image_folder
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError
from bottleneck.inference.engines import ONNX_TOLERANCE, onnx_providers, relative_difference

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_providers_per_device():
    assert onnx_providers("cpu", [TRT, CUDA, CPU]) == [CPU]
    assert onnx_providers("auto", [CPU]) == [CPU]
    assert onnx_providers("auto", ["AzureExecutionProvider", CUDA, CPU]) == [CUDA, CPU]
    assert onnx_providers("gpu", [CPU, CUDA, TRT]) == [TRT, CUDA, CPU]  # TensorRT first where installed
    with pytest.raises(
        BackboneError, match=r"no GPU provider \(it has: CPUExecutionProvider\); pip install "
    ):
        onnx_providers("gpu", [CPU])


def test_a_saved_config_runs_where_it_is_read():
    saved = ExtractConfig(device="gpu").to_dict()
    assert saved["device"] == "gpu" and ExtractConfig.from_dict(saved).device == "auto"
    with pytest.raises(Exception, match="device"):
        ExtractConfig(device="tpu")


def _gpu_onnx() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


@pytest.mark.skipif(_gpu_onnx(), reason="this machine has a GPU provider")
@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "error: --device gpu, but this onnxruntime has no GPU provider"),
        (["--precision", "int8"], "error: --precision int8 runs on the CPU's integer kernels"),
    ],
)
def test_gpu_asked_without_one_is_one_line_before_any_image_is_read(tmp_path, extra, message):
    src = make_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    res = CliRunner().invoke(
        app,
        [
            "extract",
            str(src),
            "--weights",
            "none",
            "--device",
            "gpu",
            "--cache-dir",
            str(tmp_path / "c"),
            *extra,
        ],
    )
    assert res.exit_code == 2 and res.output.startswith(message) and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_cpu_runs_record_their_device(tmp_path):
    from bottleneck.inference.runner import extract

    src = make_image_folder(tmp_path / "d", {"a": 3, "b": 3})
    cfg = ExtractConfig(
        backbone="mobilenet_v2", weights="none", image_size=32, engine="tensorflow", device="cpu"
    )
    r = extract(src, cfg, cache_dir=tmp_path / "c")
    assert r.cache.meta["device"] == "cpu" and r.cache.config.device == "auto"
    info = CliRunner().invoke(app, ["info", str(r.path)])
    assert "engine tensorflow on cpu" in info.output, info.output


@pytest.mark.skipif(not _gpu_onnx(), reason="needs onnxruntime-gpu and a CUDA GPU")
def test_gpu_features_match_cpu_features(tmp_path):
    from bottleneck.inference.runner import extract

    src = make_image_folder(tmp_path / "d", {"a": 40, "b": 40}, size=(64, 48))
    kw = dict(backbone="efficientnet_lite0", weights="none", engine="onnx", cache_dir=tmp_path / "c")
    gpu = extract(src, device="gpu", **kw)
    assert gpu.cache.meta["device"] == "gpu"
    x_gpu, y_gpu = gpu.cache.load("train")  # read now: the CPU run below replaces the folder (same key)
    cpu = extract(src, device="cpu", force=True, **kw)
    assert cpu.cache.meta["device"] == "cpu"
    x_cpu, y_cpu = cpu.cache.load("train")
    assert relative_difference(x_gpu, x_cpu) <= 10 * ONNX_TOLERANCE and np.array_equal(y_gpu, y_cpu)


def _tf_gpu() -> bool:
    from bottleneck import _tf

    return bool(_tf.tensorflow().config.list_physical_devices("GPU"))


@pytest.mark.skipif(_tf_gpu(), reason="TensorFlow sees a GPU here")
def test_tensorflow_on_a_missing_gpu_is_refused_on_a_hit_too(tmp_path):
    # The ONNX path refuses --device gpu before anything is read, hit or not; the TensorFlow path did only when it
    # built the engine, so a cache hit came back as if the GPU had been there.
    src = make_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    args = [
        "extract",
        str(src),
        "--weights",
        "none",
        "--engine",
        "tensorflow",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert CliRunner().invoke(app, args).exit_code == 0  # made on the CPU
    res = CliRunner().invoke(app, [*args, "--device", "gpu"])
    assert res.exit_code == 2 and res.output.startswith("error: --device gpu, but TensorFlow sees no GPU")
