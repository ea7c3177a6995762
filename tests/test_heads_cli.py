import json

import pytest
from conftest import MeanColor, make_image_folder
from conftest import make_cache as conftest_cache
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.cli.compare import seed_list as _seeds
from bottleneck.config import ExtractConfig
from bottleneck.data.datasets import FASHION_MNIST_DIR
from bottleneck.errors import BottleneckError
from bottleneck.runs.params import parse_params

runner = CliRunner()


def make_cache(path, dim=6, pooling="avg", key="k" * 64):
    """Two well-separated classes, "no" and "yes"."""
    sizes = {"train": 30, "val": 10, "test": 10}
    return conftest_cache(
        path, dim=dim, k=2, names=["no", "yes"], sizes=sizes, sep=4.0, key=key, pooling=pooling
    )


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_fit_head_json_and_text(tmp_path):
    cache = make_cache(tmp_path / "c")
    res = invoke("fit-head", cache.path, "--head", "logreg", "--out", tmp_path / "run", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["head"] == "logreg" and out["path"] == str(tmp_path / "run") and out["fit_seconds"] > 0
    assert set(out["metrics"]) == {"val", "test"} and out["metrics"]["test"]["accuracy"] >= 0.9
    assert {"accuracy", "balanced_accuracy", "log_loss", "per_class"} <= set(out["metrics"]["test"])
    assert (tmp_path / "run" / "report.md").is_file()

    res = invoke(
        "fit-head", cache.path, "--head", "sigmoid", "--epochs", 3, "--runs-dir", tmp_path / "runs", "-q"
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "runs" / "c-sigmoid")
    res = invoke(
        "fit-head",
        cache.path,
        "--head",
        "mlp",
        "--epochs",
        2,
        "--param",
        "width=8",
        "--param",
        "dropout=0.1",
        "--runs-dir",
        tmp_path / "runs",
    )
    assert res.exit_code == 0, res.output
    assert "mlp fitted in" in res.stderr and "test accuracy" in res.stderr
    saved = json.loads((tmp_path / "runs" / "c-mlp" / "metrics.json").read_text())
    assert (
        saved["params"]["width"] == 8 and saved["params"]["dropout"] == 0.1 and saved["params"]["epochs"] == 2
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--head", "mpl"],
            "error: unknown head 'mpl'; choose one of: logreg, linear, mlp, sigmoid, pool-dense. Did you mean mlp?",
        ),
        (["--head", "logreg", "--epochs", "3"], "error: head logreg has no parameter 'epochs'"),
        (["--head", "pool-dense"], "error: the pool-dense head needs spatial features"),
        (["--param", "width"], "error: --param 'width' must be KEY=VALUE"),
    ],
)
def test_fit_head_user_errors_are_one_line(tmp_path, args, message):
    cache = make_cache(tmp_path / "c")
    res = invoke("fit-head", cache.path, *args, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2
    assert res.stderr.startswith(message) and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_fit_head_on_a_missing_cache(tmp_path):
    res = invoke("fit-head", tmp_path / "nope")
    assert res.exit_code == 2 and res.stderr.startswith("error: no cache at")


def test_evaluate(tmp_path):
    cache = make_cache(tmp_path / "c")
    assert invoke("fit-head", cache.path, "--out", tmp_path / "run", "-q").exit_code == 0
    res = invoke("evaluate", tmp_path / "run", cache.path, "--split", "val", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["split"] == "val" and out["metrics"]["val"]["n"] == 20
    text = invoke("evaluate", tmp_path / "run", cache.path).stdout
    assert "(test, 20 rows)" in text and "| accuracy          |" in text
    other = make_cache(tmp_path / "wide", dim=7)
    res = invoke("evaluate", tmp_path / "run", other.path)
    assert res.exit_code == 2 and "feature shape (7,) but this logreg head was trained on (6,)" in res.stderr


def test_compare_prints_and_saves_the_table(tmp_path):
    a = make_cache(tmp_path / "a")
    b = make_cache(tmp_path / "b", dim=9, pooling="max")
    out = tmp_path / "cmp"
    res = invoke(
        "compare", a.path, b.path, "--heads", "logreg,sigmoid", "--seeds", "2", "--epochs", "2", "--out", out
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("| cache | backbone   | head    | split | accuracy")
    assert len([line for line in lines if line.startswith("| a ") or line.startswith("| b ")]) == 4
    assert "mean ± std over 2 seeds" in res.stdout and "saved " in res.stderr
    assert (out / "comparison.csv").read_text().count("\n") == 5
    res = invoke(
        "compare", a.path, "--heads", "logreg", "--param", "logreg.Cs=[0.1,1]", "--json", "--out", out
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"][0]["head"] == "logreg"
    bad = invoke("compare", a.path, "--heads", "logreg", "--seeds", "x")
    assert bad.exit_code == 2 and "--seeds 'x' must be a count" in bad.stderr


def test_parse_params_and_seeds():
    assert parse_params(["width=512", "dropout=0.2", "pool=max", "Cs=[1, 10]"]) == {
        "width": 512,
        "dropout": 0.2,
        "pool": "max",
        "Cs": [1, 10],
    }
    assert parse_params(["mlp.width=8"], heads=["mlp"]) == {"mlp": {"width": 8}}
    with pytest.raises(BottleneckError, match="name the parameter without a head here"):
        parse_params(["mlp.width=8"])
    assert _seeds("3") == [0, 1, 2] and _seeds("4,7") == [4, 7] and _seeds("5,") == [5]
    with pytest.raises(BottleneckError, match="--seeds 0 must be at least 1"):
        _seeds("0")


def test_predict_prints_one_line_per_image(tmp_path, monkeypatch):
    import bottleneck.inference.chooser
    from bottleneck.inference.runner import run_extraction

    monkeypatch.setattr(
        bottleneck.inference.chooser, "_tensorflow_engine", lambda config: MeanColor(scale=1 / 255)
    )
    src = make_image_folder(tmp_path / "data", {"ant": 6, "bee": 6}, splits=["train", "test"])
    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=4)
    cache = run_extraction(
        src, cfg, cache_dir=tmp_path / "cache", engine_factory=lambda c: MeanColor(scale=1 / 255)
    ).cache
    assert invoke("fit-head", cache.path, "--out", tmp_path / "run", "-q").exit_code == 0
    res = invoke("predict", tmp_path / "run", src / "test", "--top", "2")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 12
    assert all(line.split("\t")[1].split()[0] == line.split("/")[-2] for line in lines)  # right class first
    res = invoke("predict", tmp_path / "run", src / "test" / "bee" / "000.png", "--json")
    out = json.loads(res.stdout)
    assert len(out) == 1 and out[0]["top"][0]["class"] == "bee" and len(out[0]["top"]) == 2
    res = invoke("predict", tmp_path / "run", tmp_path / "missing.jpg")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    # A batch size below 1 printed nothing and exited 0 (-1), or gave a traceback (0): now one line, exit 2.
    for bad in ("-1", "0"):
        res = invoke("predict", tmp_path / "run", src / "test", "--batch-size", bad)
        assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.output
        assert res.stderr.strip().splitlines() == [
            f"error: --batch-size {bad} is not allowed: an integer of at least 1; e.g. --batch-size 32."
        ]


def test_fit_head_params_are_read_as_declared(tmp_path):
    cache = make_cache(tmp_path / "c")
    res = invoke(
        "fit-head", cache.path, "--out", tmp_path / "run", "-q",
        "--param", "standardize=False", "--param", "refit=TRUE", "--param", "sweep_rows=none",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    params = json.loads((tmp_path / "run" / "metrics.json").read_text())["params"]
    # 'False' used to be stored as the (truthy) string 'False'
    assert params["standardize"] is False and params["refit"] is True and params["sweep_rows"] is None
    from bottleneck.heads import load_head

    head = load_head(tmp_path / "run" / "head")
    assert head.get_params()["standardize"] is False and head.scale_.tolist() == [1.0] * 6


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("refit=maybe", "error: refit=maybe is not allowed: True or False; e.g. refit=True."),
        ("max_iter=0", "error: max_iter=0 is not allowed: an integer of at least 1; e.g. max_iter=1000."),
        ("max_iter=1.5", "error: max_iter=1.5 is not allowed: an integer of at least 1"),
        ("standardize=nope", "error: standardize=nope is not allowed: True or False"),
        ("tol=0", "error: tol=0.0 is not allowed: a number in (0, inf); e.g. tol=0.0001."),
        ("blas_threads=99999", "error: blas_threads=99999 is not allowed: None or an integer of at least 1"),
        ("standardise=false", "error: head logreg has no parameter 'standardise'; its parameters are: Cs,"),
    ],
)
def test_fit_head_bad_params_are_refused_before_fitting(tmp_path, param, message):
    cache = make_cache(tmp_path / "c")
    res = invoke("fit-head", cache.path, "--out", tmp_path / "run", "--param", param)
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not (tmp_path / "run").exists()


def test_compare_params_per_head_are_typed(tmp_path):
    cache = make_cache(tmp_path / "c")
    res = invoke(
        "compare", cache.path, "--heads", "logreg,mlp", "--no-baseline", "--out", tmp_path / "cmp", "--json",
        "--param", "logreg.standardize=false", "--param", "mlp.width=4", "--param", "epochs=2",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    bad = invoke("compare", cache.path, "--heads", "logreg,mlp", "--param", "logreg.refit=maybe")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: refit=maybe is not allowed: True or False")


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
    reason="apt-get install dataset-fashion-mnist",
)
def test_datasets_export_fashion_mnist(tmp_path):
    res = invoke("datasets", "export", "fashion-mnist", tmp_path / "fm", "--per-class", 1, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["splits"] == {"train": 10, "test": 10} and len(list((tmp_path / "fm").rglob("*.png"))) == 20
    assert invoke("datasets", "export", "fashion-mnist", tmp_path / "fm", "--per-class", 1).exit_code == 0
    again = invoke("datasets", "export", "fashion-mnist", tmp_path / "fm")
    assert again.exit_code == 2 and "is not empty" in again.stderr
