"""A head saved with ``Head.save`` read back: head.json's seal and every file's sha256 checked before anything loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck._io import file_problem, read_json, seal_of
from bottleneck.errors import HeadError, first_line
from bottleneck.heads.base import DICT_ITEMS, HEAD_FILE, HEAD_FORMAT_VERSION, READ_ERRORS, Head
from bottleneck.heads.registry import HEADS


def _params_from_json(params: dict) -> dict:
    return {
        k: {a: b for a, b in v[DICT_ITEMS]} if isinstance(v, dict) and list(v) == [DICT_ITEMS] else v
        for k, v in params.items()
    }


def load_head(path) -> Head:
    """Load a head saved with ``Head.save`` (a folder with head.json); HeadError (one line naming the file and the
    fix) when it is missing, foreign, edited or damaged: head.json's seal and the model file's sha256 are checked
    before anything else is read."""

    path = Path(path)
    info_file = path / HEAD_FILE
    info = read_json(
        info_file,
        HeadError,
        missing=f"no saved head at {path} (no {HEAD_FILE}); pass the head/ folder of a `fit-head` run.",
        redo="fit the head again.",
    )
    if not isinstance(info, dict):
        raise HeadError(
            f"{info_file} holds a JSON {type(info).__name__}, not a saved head; fit the head again."
        )
    _check_sealed(info, info_file)
    if info.get("format_version") != HEAD_FORMAT_VERSION or info.get("head") not in HEADS:
        raise HeadError(
            f"{info_file} is head format {info.get('format_version')!r} of head {info.get('head')!r}; this "
            f"bottleneck reads format {HEAD_FORMAT_VERSION} of {', '.join(HEADS)}. Fit the head again."
        )
    for name, want in (info.get("files") or {}).items():
        problem = file_problem(path / name, want, HEAD_FILE) if _plain_name(name) else "is no file of a head"
        if problem:
            raise HeadError(f"{path / name} {problem}; fit the head again.")
    try:
        head = HEADS[info["head"]](**_params_from_json(info["params"]))
        head.classes_ = classes_from_json(info["classes"])
        head.feature_shape_ = tuple(info["feature_shape"])
        head.n_features_in_ = int(np.prod(head.feature_shape_))
        head.history_ = info.get("history") or {}
        head.trained_on_ = info.get("trained_on")
        head._load_model(path, info)
        head._check_loaded()
    except HeadError:
        raise
    except (*READ_ERRORS, TypeError) as exc:  # an old head (no digests) whose files were damaged or mixed up
        raise HeadError(
            f"the saved head at {path} is damaged ({first_line(exc, with_type=True)}); fit the head again."
        ) from None
    return head


def _check_sealed(info: dict, info_file: Path) -> None:
    """HeadError unless head.json's seal matches its content. Heads saved before head.json was sealed have neither
    a seal nor file digests and are accepted as they are (their files are still checked as they load); one with
    digests but no seal was edited."""
    if "seal" not in info and "files" not in info:
        return
    if info.get("seal") != seal_of(info):
        raise HeadError(
            f"{info_file} was edited or damaged after the head was saved (its seal does not match its content); "
            "fit the head again."
        )


def _plain_name(name) -> bool:
    """Whether ``name`` (from a checked head.json) names a file in the head's folder, never one outside it."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def classes_from_json(values: list) -> np.ndarray:
    """classes_ as saved in head.json: integers come back int64 (a cache's labels), strings as a str array,
    whole-valued float labels as float64."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values)
