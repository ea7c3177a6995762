"""Cache keys pinned: refactoring how settings are declared must not change the key of any cache already on disk.

The digests below were computed before the settings moved to one declaration (issue #32); a change here means
every user's cache misses and is extracted again, so it is never updated casually: bump ``FEATURE_VERSION``
instead when features really change.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from bottleneck.cache import key as cache_key
from bottleneck.config import ExtractConfig

# (settings, cache key, per-row key) with every version at 1.0 and the manifest fingerprint 'f' * 64
PINNED = [
    (
        {},
        "b6cec8fcab6381fe70399d2dd26aa78a7a20edbffe0904fab1562483e7eb7296",
        "40fed3b8d94b37a0f38bce3af812ce0566bfa53b6015ebd2722b7a045358da30",
    ),
    (
        {"backbone": "efficientnet_lite0", "weights": "none", "image_size": 96},
        "ddb23f1496b70df3096257082eaf6d00a159f67448d2737509bf278acbb7dd79",
        "d879d8958c48af033d7bcc1744ddbc533ae7fb31ea7c89ac5485852fdfe94e58",
    ),
    (
        {"backbone": "mobilenet_v2", "weights": "none", "layer": "blocks", "pooling": "max", "format": "npy"},
        "78e65d089ff2c7dd08d6ae78d695d1604612b2d8f710c3c3b10183eca9d7aa41",
        "b71112e1a546b5e0c55fb6ce2777a795077c861f10a7293a0bbb0ff356a08610",
    ),
    (
        {
            "backbone": "pixels",
            "weights": "none",
            "image_size": 16,
            "resize": "crop",
            "on_bad_image": "skip",
            "max_image_pixels": 0,
        },
        "dc4606c82d020d5c043ee0f5cf217bdc5c3d7117911d8477a47283408cb17333",
        "ca7d574c8823c15b0adf5188a53c6c1e50b8f429af23b8e25c7c1772258bccf1",
    ),
    (
        {
            "backbone": "efficientnet_lite0",
            "precision": "int8",
            "calibration": 64,
            "fast_decode": True,
            "shard_rows": 256,
            "batch_size": 32,
        },
        "9b6b10314c3410c4063556c3334421b6cfbee5cfb325830f7eb616779960ee3c",
        "bf77a8e098249f941626b41ae959023df6ec95d4ac5991669387d6f31f6addb5",
    ),
    (
        {
            "backbone": "resnet50",
            "weights": "none",
            "layer": "top",
            "dtype": "float16",
            "format": "h5",
            "engine": "onnx",
            "threads": 2,
            "workers": 1,
            "xla": False,
            "device": "cpu",
        },
        "74c85f38e75fb9511df0f24313201c18f273e3283cfcb3a99cc291c5abccb2ed",
        "fb3bcde3529637f64f2f637edb22ea04cbad97bed40bfb7803580f23dec2eb90",
    ),
    (
        {"backbone": "efficientnet_lite0", "layer": "multiscale", "precision": "fp32", "calibration": 10},
        "faec1f1120d1a3e6e64812399434219bdbefb7742f83d3e8db3c7c8044913ed8",
        "28a0677538bed5272c31af0239ada16560ee47e3f5567ea0a4bbf7ace1ec2304",
    ),
]


@pytest.fixture
def fixed_versions(monkeypatch):
    """Every library and weights package at a fixed version, so the pins hold on any machine."""
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "1.0")


def keys_of(settings: dict) -> tuple[str, str]:
    key, material = cache_key.compute_key(ExtractConfig(**settings), "f" * 64)
    return key, cache_key.features_key(material)


@pytest.mark.parametrize(("settings", "key", "row_key"), PINNED, ids=[str(i) for i in range(len(PINNED))])
def test_cache_keys_are_those_of_the_caches_on_disk(fixed_versions, settings, key, row_key):
    assert keys_of(settings) == (key, row_key)


def test_run_settings_leave_the_key_alone(fixed_versions):
    """Settings that only decide how the work runs (batch size, threads, engine, device) change no key."""
    base = keys_of({"weights": "none"})
    assert keys_of({"weights": "none", "batch_size": 8, "threads": 1, "workers": 3, "device": "cpu"}) == base
    assert keys_of({"weights": "none", "engine": "tensorflow", "xla": True}) == base
