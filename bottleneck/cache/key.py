"""The cache key: a hash of everything that changes the features, computed without importing TensorFlow."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path

from bottleneck._io import file_hash
from bottleneck.backbones import get_spec
from bottleneck.backbones.keras_weights import weights_file
from bottleneck.backbones.model_file import is_model_path
from bottleneck.backbones.onnx_file import is_onnx_path, model_digest
from bottleneck.config import ROW_NEUTRAL_SETTINGS, ExtractConfig

# Bump when a change in bottleneck itself changes extracted values (decoding, resizing, graph).
FEATURE_VERSION = 1

# Libraries whose upgrade can change feature values: numerics (TF/Keras) and decoding/resizing (Pillow).
KEY_LIBRARIES = ("tensorflow", "keras", "pillow")


def library_versions() -> dict[str, str]:
    out = {}
    for dist in KEY_LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def weights_identity(config: ExtractConfig) -> str:
    """What identifies the weights: a file hash, a package version, or 'imagenet' plus the Keras version."""

    if is_onnx_path(config.backbone):
        return "onnx-file:" + model_digest(config.backbone)  # with its external data files
    if is_model_path(config.backbone):
        return "model-file:" + file_hash(Path(config.backbone))
    if config.weights == "none" or get_spec(config.backbone).weights == "none":
        return "none"  # random init, made deterministic by a fixed seed at build time
    if config.weights != "imagenet":
        # weights_file: a regular file, checked before it is read (never a FIFO, a folder or /proc)
        return "file:" + file_hash(weights_file(config.weights, config.backbone))
    spec = get_spec(config.backbone)
    if spec.weights.startswith("package:"):
        dist = spec.weights.split(":", 1)[1]
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return f"{dist}==missing"
    return f"imagenet@keras-{library_versions()['keras']}"


def compute_key(
    config: ExtractConfig, manifest_fingerprint: str, extra: dict | None = None
) -> tuple[str, dict]:
    """(key hex digest, the JSON-ready dict it was hashed from). ``extra`` adds material that decides the
    features but is not a setting (the int8 calibration sample's identity); it also enters the per-row key."""
    material = {
        "feature_version": FEATURE_VERSION,
        "config": config.key_fields(),
        "weights": weights_identity(config),
        "manifest": manifest_fingerprint,
        "versions": library_versions(),
    }
    material.update(extra or {})
    return key_of(material), material


def key_of(material: dict) -> str:
    """The cache key of what ``compute_key`` hashes (also of a layer subset's material, see ``cache.reader.LayerView``)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_dir_name(config: ExtractConfig, key: str) -> str:
    name = Path(config.backbone).stem if is_model_path(config.backbone) else config.backbone
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"
    return f"{slug}-{key[:8]}"


# Before the settings declared their roles, the per-row key left out only these two (not max_image_pixels).
# Heads saved then recorded keys of that form; ``features_keys`` still recognises them.
_LEGACY_ROW_NEUTRAL = ("format", "on_bad_image")


def features_key(material: dict, row_neutral=ROW_NEUTRAL_SETTINGS) -> str:
    """A hash of what decides each row's values, whatever the dataset: caches sharing it can share rows.

    ``material`` is what ``compute_key`` hashed (stored in each cache's meta.json); the manifest and the
    settings that only decide which rows exist or how they are stored (``ROW_NEUTRAL_SETTINGS``) are left out.
    """
    # which rows exist (the manifest, an exclusion list's digest) does not change any row's values
    per_row = {k: v for k, v in material.items() if k not in ("manifest", "exclude")}
    per_row["config"] = {k: v for k, v in material["config"].items() if k not in row_neutral}
    blob = json.dumps(per_row, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def features_keys(material: dict) -> set[str]:
    """The per-row key of ``material`` in its current and its legacy form (empty for caches without material)."""
    if not material or "config" not in material:
        return set()
    return {features_key(material), features_key(material, _LEGACY_ROW_NEUTRAL)}
