"""INT8 features: the verified fp32 ONNX model quantized statically (QDQ, per-channel int8 weights, uint8
activations), calibrated on a stratified sample of the source's training images, with a record of how far its
features are from fp32 ones."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bottleneck._io import replace_atomic, temp_path, write_json_atomic
from bottleneck.data.manifest import content_hash
from bottleneck.errors import BackboneError
from bottleneck.inference.engines import fixed_batches

# Mean cosine similarity between int8 and fp32 features below which extraction stops (unless accept_drift).
MIN_COSINE = 0.95
AGREEMENT_IMAGES = 64  # held-out train images the int8 features are compared on


@dataclass(frozen=True)
class Int8Record:
    """What a quantized model was calibrated on, and how close its features are to the fp32 model's."""

    calibration_ids: str  # hash of the calibration images' content hashes, in order
    calibration_images: int
    mean_cosine: float  # over AGREEMENT_IMAGES held-out train images
    min_cosine: float
    max_relative_difference: float  # max |int8 - fp32| / max |fp32|
    agreement_images: int
    weights: str = "s8"  # int8 weight type: s8 | u8 (see int8_weights); records before it were s8


WEIGHTS_ENV = "BOTTLENECK_INT8_WEIGHTS"  # s8 | u8: overrides the choice by CPU
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # int8 dot products that do not saturate


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them (``avx2``, ``avx512f``, ``avx512_vnni``, ...); None where
    /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                # x86 says "flags", ARM "Features"; "vmx flags" (virtualisation) is another list.
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return frozenset()


def int8_weights() -> str:
    """The weight type to quantize to on this machine: ``s8`` (signed weights, ONNX Runtime's fast u8s8 path) on
    CPUs with VNNI dot products and on non-x86 CPUs; ``u8`` on x86 without VNNI, where u8s8 products saturate in
    16 bits: Lite0's int8 features agreed with fp32 to a mean cosine of only 0.84 on an AVX2 EPYC with s8
    weights, 0.97+ with u8 (with 7-bit s8 weights, 0.955)."""
    import platform

    forced = os.environ.get(WEIGHTS_ENV, "").strip().lower()
    if forced in ("s8", "u8"):
        return forced
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i686"):
        return "s8"
    flags = cpu_flags()
    if flags is None:
        return "s8"  # not Linux: ONNX Runtime's default
    return "s8" if flags & VNNI_FLAGS else "u8"


def calibration_items(manifest, n: int, seed: int = 0) -> list:
    """``n`` train items, stratified: each class's items in a seeded per-id hash order, classes taken in turn.

    The same manifest gives the same sample (and so the same key); all train items when there are fewer.
    """

    by_class: dict[int, list] = {}
    for it in manifest.items_of("train"):
        by_class.setdefault(it.label, []).append(it)
    if not by_class:
        raise BackboneError(
            f"precision='int8' calibrates on the train split, and {manifest.source} has none; add a train split "
            "or use precision='fp32'."
        )
    queues = [
        sorted(v, key=lambda it: content_hash(f"{seed}\0{it.id}".encode()))
        for _, v in sorted(by_class.items())
    ]
    out, depth = [], 0
    while len(out) < n and any(depth < len(q) for q in queues):
        out += [q[depth] for q in queues if depth < len(q)][: n - len(out)]
        depth += 1
    return out


def calibration_hash(items) -> str:
    return hashlib.sha256("\n".join(it.hash for it in items).encode()).hexdigest()


def int8_path(fp32_path: Path, calibration_ids: str, weights: str = "s8") -> Path:
    suffix = "" if weights == "s8" else f"-{weights}"
    return fp32_path.with_name(f"{fp32_path.stem}-int8-{calibration_ids[:12]}{suffix}.onnx")


def _record_path(path: Path) -> Path:
    return path.with_suffix(".int8.json")


def read_record(path: Path) -> Int8Record | None:
    try:
        return Int8Record(**json.loads(_record_path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class _Reader:
    """ONNX Runtime's CalibrationDataReader over uint8 batches (re-cut to ``fixed`` images for a graph fixed to a
    batch size)."""

    def __init__(self, name: str, batches, fixed: int | None = None):
        if fixed:
            batches = list(fixed_batches(np.concatenate(list(batches)), fixed))
        self._it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantize(fp32_path: Path, out: Path, input_name: str, batches, weights: str = "s8") -> Path:
    """Write the statically quantized model of ``fp32_path`` to ``out`` (atomically), calibrated on ``batches``
    ((N, S, S, 3) uint8 arrays), with ``weights`` s8 or u8 (``int8_weights``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tmp, prepared = temp_path(out), temp_path(out, ".pre.onnx")
    try:
        # ONNX Runtime's pre-processing (graph optimisation, shapes) first: without it the Keras-converted
        # Lite0 quantized to a mean cosine of 0.67 against fp32 features; with it, 0.978 (README).
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(tmp),
            _Reader(input_name, batches, _fixed_batch(fp32_path)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        replace_atomic(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)
        Path(str(tmp) + ".data").unlink(missing_ok=True)
    return out


def _fixed_batch(path: Path) -> int | None:
    """The batch size an ONNX model's input fixes, or None."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def agreement(int8: np.ndarray, fp32: np.ndarray) -> dict:
    """Cosine similarity per row (mean, min) and the max difference relative to the fp32 scale."""
    a = int8.reshape(len(int8), -1).astype(np.float64)
    b = fp32.reshape(len(fp32), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    scale = max(float(np.abs(b).max()), 1e-12)
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "max_relative_difference": float(np.abs(a - b).max() / scale),
    }


def write_record(path: Path, record: Int8Record) -> None:
    write_json_atomic(_record_path(path), asdict(record))
