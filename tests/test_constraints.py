"""Declared parameter constraints: the one checker, the command-line parser, generated invalid values refused for
every declaration, and every numeric option of every command refused with one line before any work starts."""

from __future__ import annotations

import math
import re

import pytest
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.config import SETTINGS as EXTRACT_SETTINGS
from bottleneck.config import ExtractConfig
from bottleneck.constraints import (
    BATCH_SIZE,
    CLASS_WEIGHT,
    FRACTION,
    IMAGE_SIZE,
    OPTIONAL_SEED,
    SEED,
    THREADS,
    TOP,
    AnyOf,
    Boolean,
    DictOf,
    Interval,
    ListOf,
    Options,
    PathLike,
    Satisfies,
    String,
    check,
    invalid_values,
    make_constraint,
    max_threads,
    parse_value,
    validate_params,
)
from bottleneck.errors import BottleneckError, HeadError, TuneError
from bottleneck.heads import HEADS, head_constraints, head_params
from bottleneck.inspection.options import INSPECT
from bottleneck.job_settings import ADVISE, PREDICT
from bottleneck.runs.params import parse_params
from bottleneck.tuning.recipe import TuneSettings

EXTRACT = EXTRACT_SETTINGS.constraints()

# --- the checker -------------------------------------------------------------------------------------------------


def test_one_line_naming_the_value_what_is_allowed_and_an_example():
    with pytest.raises(HeadError) as info:
        validate_params({"batch_size": 0}, {"batch_size": BATCH_SIZE}, HeadError)
    assert str(info.value) == "batch_size=0 is not allowed: an integer of at least 1; e.g. batch_size=32."
    with pytest.raises(BottleneckError) as info:
        check("threads", 99999, THREADS)
    assert str(info.value) == (
        f"threads=99999 is not allowed: None or an integer of at least 1 and at most {max_threads()}; "
        "e.g. threads=2."
    )
    with pytest.raises(TuneError, match=r"^lr=0 is not allowed: a number in \(0, 1\]; e.g. lr=0.001\.$"):
        check("lr", 0, Interval(float, 0, 1, closed="right", example=1e-3), TuneError)


def test_names_alone_give_the_unknown_choose_one_of_message():
    with pytest.raises(
        HeadError, match=r"^unknown pool='mux'; choose one of: max, avg\. Did you mean max\?$"
    ):
        check("pool", "mux", Options(("max", "avg")), HeadError)


def test_names_not_declared_are_left_to_the_caller_and_valid_values_pass():
    validate_params({"other": object(), "batch_size": 8}, {"batch_size": BATCH_SIZE})
    validate_params({"threads": None, "lr": 1}, {"threads": THREADS, "lr": Interval(float, 0, None)})


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), (True, False), (1.0, False), (1.5, False), ("1", False), (0, False), (None, False)],
)
def test_an_integer_is_an_integer(value, ok):
    assert BATCH_SIZE.is_satisfied_by(value) is ok


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.1", 0.0, 1.0])
def test_a_fraction_is_a_finite_number_strictly_inside(value):
    assert not FRACTION.is_satisfied_by(value)


def test_numpy_values_are_numbers_and_bools():
    import numpy as np

    assert BATCH_SIZE.is_satisfied_by(np.int64(4)) and Boolean().is_satisfied_by(np.bool_(True))
    assert FRACTION.is_satisfied_by(np.float32(0.5)) and not BATCH_SIZE.is_satisfied_by(np.bool_(True))


def test_words_of_each_kind():
    assert str(Interval(int, 0, None)) == "an integer of at least 0"
    assert str(Interval(int, 16, 2048)) == "an integer of at least 16 and at most 2048"
    assert str(Interval(int, 0, 10, closed="neither")) == "an integer of at least 1 and at most 9"
    assert str(Interval(float, 0, 1, closed="left")) == "a number in [0, 1)"
    assert str(Interval(float, 0, None)) == "a number in [0, inf]"
    assert str(make_constraint([None, Boolean()])) == "None or True or False"
    assert str(ListOf(Interval(float, 0, None))) == "a list of numbers in [0, inf]"


# --- the parser --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("True", True), ("TRUE", True), ("yes", True), ("Yes", True), ("1", True)]
    + [("false", False), ("False", False), ("FALSE", False), ("no", False), ("NO", False), ("0", False)]
    + [(" false ", False)],
)
def test_booleans_from_the_command_line(raw, value):
    assert parse_value(raw, Boolean(), name="standardize") is value


@pytest.mark.parametrize("raw", ["maybe", "", "2", "f", "on", "None", "[]"])
def test_other_words_are_not_booleans(raw):
    with pytest.raises(
        BottleneckError, match=rf"^refit={re.escape(raw)} is not allowed: True or False; e.g."
    ):
        parse_value(raw, Boolean(), name="refit")


def test_numbers_none_names_and_lists_from_the_command_line():
    assert parse_value("32", BATCH_SIZE) == 32 and isinstance(parse_value("32", BATCH_SIZE), int)
    assert parse_value("1e-3", Interval(float, 0, None)) == 1e-3
    assert parse_value("2", Interval(float, 0, None)) == 2.0
    assert parse_value("none", THREADS) is None and parse_value("NONE", THREADS) is None
    assert parse_value("4", THREADS) == 4
    spec = [Interval(int, 1, None), Options(("auto",))]
    assert parse_value("auto", spec) == "auto" and parse_value("16", spec) == 16
    assert parse_value("[1, 10]", ListOf(Interval(float, 0, None))) == [1.0, 10.0]
    assert parse_value("0.1,1", ListOf(Interval(float, 0, None))) == [0.1, 1.0]
    assert (
        parse_value('{"a": 2}', CLASS_WEIGHT) == {"a": 2}
        and parse_value("balanced", CLASS_WEIGHT) == "balanced"
    )
    assert parse_value("layer_1", String()) == "layer_1"


@pytest.mark.parametrize(
    ("raw", "spec", "message"),
    [
        ("1.5", Interval(int, 1, None), r"^max_iter=1\.5 is not allowed: an integer of at least 1"),
        ("0", Interval(int, 1, None), r"^max_iter=0 is not allowed: an integer of at least 1"),
        ("ten", Interval(int, 1, None), r"^max_iter=ten is not allowed"),
        ("nan", Interval(float, 0, None), r"^max_iter=nan is not allowed: a number in \[0, inf\]"),
        ("null", THREADS, r"^max_iter=null is not allowed: None or an integer"),
        ("[1, -1]", ListOf(Interval(float, 0, None)), r"^max_iter=\[1\.0, -1\.0\] is not allowed"),
        ("[1, 2", ListOf(Interval(float, 0, None)), r"^max_iter=\[1, 2 is not allowed"),
    ],
)
def test_values_that_do_not_read_or_are_not_allowed(raw, spec, message):
    with pytest.raises(HeadError, match=message):
        parse_value(raw, spec, name="max_iter", error=HeadError)


# --- every declaration: a valid example, and generated invalid values refused -------------------------------------


def _declarations():
    out = {}
    for name in HEADS:
        out |= {f"{name}.{p}": (c, HeadError) for p, c in head_constraints(name).items()}
    out |= {f"extract.{p}": (c, BottleneckError) for p, c in EXTRACT.items()}
    out |= {f"fine-tune.{p}": (c, TuneError) for p, c in TuneSettings.constraints().items()}
    for job, table in (("predict", PREDICT), ("advise", ADVISE), ("inspect", INSPECT)):
        out |= {f"{job}.{p}": (c, BottleneckError) for p, c in table.items()}
    shared = {"SEED": SEED, "OPTIONAL_SEED": OPTIONAL_SEED, "IMAGE_SIZE": IMAGE_SIZE, "TOP": TOP}
    shared |= {"PathLike": PathLike(), "DictOf": DictOf(Boolean())}
    out |= {f"shared.{k}": (c, BottleneckError) for k, c in shared.items()}
    return out


DECLARED = _declarations()


@pytest.mark.parametrize("where", sorted(DECLARED))
def test_each_declared_constraint_refuses_its_generated_invalid_values(where):
    spec, error = DECLARED[where]
    name = where.rsplit(".", 1)[1]
    c = make_constraint(spec)
    assert c.is_satisfied_by(c.example), (where, c.example)  # the example in every message is itself allowed
    bad = invalid_values(spec)
    if isinstance(c, Satisfies) and not bad:
        return  # a rule checked by its own code (fine-tune's augment names)
    assert bad, where
    for value in bad:
        with pytest.raises(error) as info:
            validate_params({name: value}, {name: spec}, error)
        text = str(info.value)
        assert "\n" not in text and text.startswith((f"{name}=", f"unknown {name}=")), text


def test_generated_invalid_values_cover_ends_and_types():
    bad = invalid_values(Interval(int, 1, 256))
    assert 0 in bad and 257 in bad and 1.5 in bad and True in bad and "a string" in bad
    bad = invalid_values(Interval(float, 0, 1, closed="neither"))
    assert 0 in bad and 1 in bad and any(isinstance(v, float) and math.isnan(v) for v in bad)
    # a value another part allows is not "invalid": None is fine for THREADS, "auto" for a Keras batch size
    assert None not in invalid_values(THREADS)
    assert "auto" not in invalid_values(AnyOf(BATCH_SIZE, Options(("auto",))))


def test_every_head_declares_every_parameter():
    for name in HEADS:
        assert set(head_constraints(name)) == set(head_params(name)), name


def test_every_checked_extract_setting_is_a_field():
    fields = set(ExtractConfig().to_dict())
    assert set(EXTRACT) <= fields
    numeric = {k for k, v in ExtractConfig().to_dict().items() if isinstance(v, int | float) or v is None}
    # every number (or None-able number) of the config is declared, but for shard_rows (checked with batch_size)
    # the names resolved where they are known, and an ONNX file's mean/std (three numbers each, read by
    # backbones.onnx_preprocess.parse_triple when the config is made)
    assert numeric - set(EXTRACT) <= {"shard_rows", "layer", "preprocess", "mean", "std"}


# --- head parameters from the command line -------------------------------------------------------------------------


def test_params_are_read_as_each_heads_declared_type():
    got = parse_params(
        ["standardize=False", "refit=true", "Cs=[1, 10]", "sweep_rows=none", "max_iter=50"], head="logreg"
    )
    assert got == {"standardize": False, "refit": True, "Cs": [1.0, 10.0], "sweep_rows": None, "max_iter": 50}
    assert got["standardize"] is False
    got = parse_params(
        ["batch_size=auto", "in_memory=FALSE", "mlp.width=8", "dropout=0"], heads=["mlp", "linear"]
    )
    assert got == {"batch_size": "auto", "in_memory": False, "mlp": {"width": 8}, "dropout": 0.0}
    # without a head (scripts of old): JSON, else text, as before
    assert parse_params(["width=512", "pool=max"]) == {"width": 512, "pool": "max"}


@pytest.mark.parametrize(
    ("items", "kw", "message"),
    [
        (
            ["refit=maybe"],
            {"head": "logreg"},
            r"^refit=maybe is not allowed: True or False; e\.g\. refit=True\.$",
        ),
        (["max_iter=0"], {"head": "logreg"}, r"^max_iter=0 is not allowed: an integer of at least 1"),
        (["max_iter=1.5"], {"head": "logreg"}, r"^max_iter=1\.5 is not allowed"),
        (["epochs=0"], {"head": "mlp"}, r"^epochs=0 is not allowed: an integer of at least 1"),
        (["dropout=1"], {"head": "mlp"}, r"^dropout=1\.0 is not allowed: a number in \[0, 1\)"),
        (["pool=mean"], {"head": "pool-dense"}, r"^unknown pool=mean; choose one of: max, avg"),
        (["widht=3"], {"head": "mlp"}, r"^head mlp has no parameter 'widht'; .*Did you mean width\?"),
        (
            ["widht=3"],
            {"heads": ["mlp", "linear"]},
            r"^no compared head \(mlp, linear\) has .*Did you mean width",
        ),
        (["mlp.widht=3"], {"heads": ["mlp"]}, r"^head mlp has no parameter 'widht'"),
        (["mlp.width=0"], {"heads": ["mlp"]}, r"^width=0 is not allowed"),
    ],
)
def test_bad_params_are_one_error(items, kw, message):
    with pytest.raises(HeadError, match=message) as info:
        parse_params(items, **kw)
    assert "\n" not in str(info.value)


# --- every numeric option of every command ------------------------------------------------------------------------


def one_line_error(args) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--batch-size", "0"],
            "error: --batch-size 0 is not allowed: an integer of at least 1; e.g. --batch-size 32.",
        ),
        (
            ["--threads", "99999"],
            "error: --threads 99999 is not allowed: None or an integer of at least 1 and at most",
        ),
        (["--workers", "0"], "error: --workers 0 is not allowed"),
        (["--workers", "100000"], "error: --workers 100000 is not allowed"),
        (["--image-size", "8"], "error: --image-size 8 is not allowed"),
        (["--image-size", "100000"], "error: --image-size 100000 is not allowed"),
        (["--calibration", "0"], "error: --calibration 0 is not allowed: an integer of at least 1"),
        (["--max-image-pixels", "-1"], "error: --max-image-pixels -1 is not allowed"),
        (["--shard-rows", "-64"], "error: --shard-rows -64 is not a positive number of rows"),
        (["--val-fraction", "1.5"], "error: --val-fraction 1.5 is not allowed: None or a number in (0, 1)"),
        (["--seed", "-1"], "error: --seed -1 is not allowed: an integer of at least 0"),
    ],
)
def test_extract_numeric_options(tmp_path, args, expected):
    # The source does not even exist: every option is checked before anything is read or started.
    line = one_line_error(["extract", tmp_path / "nowhere", "--cache-dir", tmp_path / "c", *args])
    assert line.startswith(expected), line
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["predict", "run", "x.png", "--batch-size", "-1"],
            "error: --batch-size -1 is not allowed: an integer",
        ),
        (
            ["predict", "run", "x.png", "--batch-size", "0"],
            "error: --batch-size 0 is not allowed: an integer",
        ),
        (
            ["predict", "run", "x.png", "--top", "0"],
            "error: --top 0 is not allowed: an integer of at least 1",
        ),
        (["classify", "x.png", "--top", "0"], "error: --top 0 is not allowed"),
        (["classify", "x.png", "--image-size", "4096"], "error: --image-size 4096 is not allowed"),
        (
            ["advise", "data", "--per-class", "0"],
            "error: --per-class 0 is not allowed: an integer of at least 5",
        ),
        (["advise", "data", "--seed", "-2"], "error: --seed -2 is not allowed"),
        (["advise", "data", "--image-size", "3"], "error: --image-size 3 is not allowed"),
        (["inspect", "cache", "--folds", "1"], "error: --folds 1 is not allowed: an integer of at least 2"),
        (["inspect", "cache", "--neighbours", "0"], "error: --neighbours 0 is not allowed"),
        (["inspect", "cache", "--threshold", "0"], "error: --threshold 0.0 is not allowed"),
        (["fit-head", "cache", "--seed", "-1"], "error: --seed -1 is not allowed: an integer of at least 0"),
        (["fit-head", "cache", "--head", "mlp", "--epochs", "0"], "error: --epochs 0 is not allowed"),
        (["fit-head", "cache", "--head", "mlp", "--batch-size", "0"], "error: --batch-size 0 is not allowed"),
        (["fit-head", "cache", "--head", "mlp", "--lr", "0"], "error: --lr 0.0 is not allowed"),
        (["fit-head", "cache", "--head", "mlp", "--patience", "-1"], "error: --patience -1 is not allowed"),
        (
            ["compare", "cache", "--seeds", "-1,2"],
            "error: --seeds -1 is not allowed: an integer of at least 0",
        ),
        (["compare", "cache", "--heads", "mlp", "--epochs", "0"], "error: --epochs 0 is not allowed"),
        (["compare", "cache", "--heads", "mlp", "--param", "mlp.width=0"], "error: width=0 is not allowed"),
        (["fine-tune", "run", "--epochs", "0"], "error: --epochs 0 is not allowed: an integer of at least 1"),
        (["fine-tune", "run", "--batch-size", "0"], "error: --batch-size 0 is not allowed"),
        (["fine-tune", "run", "--views", "-1"], "error: --views -1 is not allowed"),
        (["fine-tune", "run", "--seed", "-1"], "error: --seed -1 is not allowed"),
        (["fine-tune", "run", "--val-fraction", "1"], "error: --val-fraction 1.0 is not allowed"),
        (["cache", "verify", "cache", "--recompute", "-1"], "error: --recompute -1 is not allowed"),
        (["cache", "gc", "--older-than-hours", "-1"], "error: --older-than-hours -1.0 is not allowed"),
        (
            ["datasets", "export", "fashion-mnist", "out", "--per-class", "0"],
            "error: --per-class 0 is not allowed",
        ),
    ],
)
def test_numeric_options_of_every_command(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)  # nothing named exists: every option is checked before anything is read
    line = one_line_error(args)
    assert line.startswith(expected), line
    assert sorted(p.name for p in tmp_path.iterdir()) == []
