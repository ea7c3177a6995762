import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from bottleneck.errors import BottleneckError
from bottleneck.report import (
    classification_metrics,
    csv_text,
    markdown_table,
    mean_std,
    plot_comparison,
    plot_confusion,
    plot_history,
    render_report,
)

# Six rows, three classes; argmax predictions are [0, 1, 1, 2, 0, 2].
Y = np.array([0, 0, 1, 2, 2, 1])
P = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.5, 0.1, 0.4],
        [0.3, 0.3, 0.4],
    ]
)


def test_metrics_on_known_arrays_by_hand():
    m = classification_metrics(Y, P, class_names=["cat", "dog", "fox"])
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)  # rows 0, 2, 3 are right
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2) / 3)
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.8, 0.6, 0.4, 0.3]))
    assert m["log_loss"] == pytest.approx(expected_loss)
    assert "top5_accuracy" not in m  # only 3 classes
    assert m["labels"] == ["cat", "dog", "fox"]
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["per_class"]["dog"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 200)
    p = rng.dirichlet(np.ones(8), 200)
    p[np.arange(200), y] += rng.uniform(0, 1, 200)  # better than chance, not perfect
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=5))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    assert [v["recall"] for v in m["per_class"].values()] == pytest.approx(rec)
    assert [v["f1"] for v in m["per_class"].values()] == pytest.approx(f1)
    assert [v["support"] for v in m["per_class"].values()] == sup.tolist()
    assert m["confusion"] == skm.confusion_matrix(y, pred).tolist()


def test_columns_follow_classes_and_unseen_labels_count_as_errors():
    # A head that saw only labels 1 and 3 of a 4-class cache: its columns are [1, 3].
    y = np.array([1, 3, 3, 0])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    m = classification_metrics(y, p, classes=[1, 3], class_names=["a", "b", "c", "d"])
    assert m["labels"] == ["a", "b", "d"]
    assert m["accuracy"] == pytest.approx(2 / 4)  # label 0 can never be predicted
    assert m["per_class"]["a"]["support"] == 1 and m["per_class"]["a"]["recall"] == 0.0
    assert (
        np.isfinite(m["log_loss"]) and m["log_loss"] > 5
    )  # a zero probability for the truth is clipped, not inf


def test_metrics_bad_shapes():
    with pytest.raises(BottleneckError, match=r"proba has shape \(3,\) for 6 labels"):
        classification_metrics(Y, np.zeros(3))
    with pytest.raises(BottleneckError, match="2 classes for 3 probability columns"):
        classification_metrics(Y, P, classes=[0, 1])
    with pytest.raises(BottleneckError, match="no rows to evaluate"):
        classification_metrics([], np.zeros((0, 3)))


def test_markdown_table_and_csv():
    text = markdown_table(["head", "accuracy", "n"], [["logreg", 0.91234, 10], ["mlp", None, 200]])
    assert text.splitlines() == [
        "| head   | accuracy |   n |",
        "|--------|---------:|----:|",
        "| logreg |   0.9123 |  10 |",
        "| mlp    |        - | 200 |",
    ]
    assert csv_text(["a", "b"], [[1, None], ["x,y", 2.5]]) == 'a,b\n1,\n"x,y",2.5\n'
    assert mean_std([0.9]) == "0.9000"
    assert mean_std([0.9, 0.92, 0.94]) == "0.9200 ± 0.0200"


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        return np.asarray(im.convert("L"))


def test_plots_write_pngs(tmp_path):
    keras_hist = {
        "loss": [1.0, 0.5, 0.4],
        "val_loss": [1.1, 0.6, 0.7],
        "accuracy": [0.5, 0.8, 0.9],
        "val_accuracy": [0.4, 0.7, 0.7],
        "best_epoch": 2,
    }
    _png(plot_history(keras_hist, tmp_path / "h.png", title="mlp"))
    sweep = {
        "C": [0.01, 0.1, 1.0],
        "val_accuracy": [0.8, 0.9, 0.85],
        "val_loss": [0.6, 0.3, 0.4],
        "best_C": 0.1,
    }
    _png(plot_history(sweep, tmp_path / "c.png"))
    cm = classification_metrics(Y, P, class_names=["cat", "dog", "fox"])
    pixels = _png(plot_confusion(cm["confusion"], cm["labels"], tmp_path / "cm.png"))
    assert pixels.std() > 10  # not a blank image
    rows = [
        {"cache": "a", "head": "logreg", "accuracy_mean": 0.9, "accuracy_std": 0.01},
        {"cache": "a", "head": "mlp", "accuracy_mean": 0.92, "accuracy_std": 0.0},
        {"cache": "b", "head": "logreg", "accuracy_mean": 0.8, "accuracy_std": 0.02},
    ]
    _png(plot_comparison(rows, tmp_path / "cmp.png"))


def test_plotting_never_imports_pyplot(tmp_path):
    # pyplot would pick a global backend and could disturb a user's interactive session.
    code = (
        "import sys; from bottleneck.report import plot_history; "
        f"plot_history({{'loss': [1, 0.5]}}, r'{tmp_path / 'x.png'}'); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert (tmp_path / "x.png").stat().st_size > 1000


def test_render_report():
    cm = classification_metrics(Y, P, class_names=["cat", "dog", "fox"])
    summary = {
        "head": "logreg",
        "fit_seconds": 1.234,
        "params": {"Cs": None, "refit": False},
        "selection": {"C": 0.1},
        "cache": {
            "name": "lite0-1234abcd",
            "path": "cache/lite0-1234abcd",
            "feature_shape": [1280],
            "splits": {"train": 10, "test": 6},
            "config": {"backbone": "efficientnet_lite0", "weights": "imagenet", "pooling": "avg"},
        },
        "notes": ["a note"],
        "metrics": {"val": cm, "test": cm},
    }
    text = render_report(summary)
    assert text.startswith("# logreg head on lite0-1234abcd\n")
    assert "- **fit time**: 1.23 s" in text and "- **selection**: C 0.1" in text
    assert "efficientnet\\_lite0 (imagenet weights, pooling avg), shape (1280,)" in text
    assert "| test  | 6 |   0.5000 |            0.5000 |   0.7358 |" in text
    assert "## Per class (test)" in text and "| dog   |    0.5000 | 0.5000 | 0.5000 |       2 |" in text
    assert "- a note" in text and "![confusion matrix](confusion.png)" in text
