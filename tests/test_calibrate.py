"""Temperature scaling of the fine-tuning selection: the fit, the tempered losses, and the fold into every head."""

from __future__ import annotations

import numpy as np
import pytest

from bottleneck.tuning.calibrate import fit_temperature, fold_temperature, output_layer, tempered_losses


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_t", [0.6, 2.0])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at(true_t):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(20000, 5))
    drawn = _softmax(logits / true_t)
    y = np.array([rng.choice(5, p=row) for row in drawn])
    fitted = fit_temperature(_softmax(logits), y)
    assert fitted == pytest.approx(true_t, rel=0.05)
    # Already calibrated probabilities need no temperature.
    assert fit_temperature(drawn, y) == pytest.approx(1.0, rel=0.05)


def test_tempered_losses_are_the_cross_entropy_of_the_divided_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=4.0, size=(50, 7))
    y = rng.integers(0, 7, 50)
    expected = -np.log(_softmax(logits / 2.5)[np.arange(50), y])
    np.testing.assert_allclose(tempered_losses(np.log(_softmax(logits)), y, 2.5), expected, rtol=1e-9)
    # A sigmoid head's [1 - p, p]: tempering gives sigmoid(z / T).
    z = rng.normal(scale=4.0, size=50)
    p = 1 / (1 + np.exp(-z))
    yb = rng.integers(0, 2, 50)
    q = 1 / (1 + np.exp(-z / 2.5))
    expected = -np.log(np.where(yb == 1, q, 1 - q))
    np.testing.assert_allclose(tempered_losses(np.log(np.c_[1 - p, p]), yb, 2.5), expected, rtol=1e-9)


@pytest.mark.parametrize("name", ["logreg", "linear", "mlp", "sigmoid"])
def test_a_folded_temperature_tempers_every_head(name):
    from bottleneck.heads import make_head
    from bottleneck.tuning.assembly import head_network

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int) if name == "sigmoid" else np.digitize(X[:, 0], [-0.5, 0.5])
    head = make_head(name, **({} if name == "logreg" else {"epochs": 3})).fit(X, y)
    net = head_network(head)
    before = np.asarray(net.predict_on_batch(X), np.float64)
    layer = output_layer(net)
    assert layer is not None and layer.name != "head_two_class"
    fold_temperature(layer, 2.0)
    after = np.asarray(net.predict_on_batch(X), np.float64)
    tempered = _softmax(np.log(np.clip(before, 1e-30, 1)) / 2.0)
    np.testing.assert_allclose(after, tempered, atol=1e-5)
    assert (after.argmax(1) == before.argmax(1)).all()  # a temperature never changes a prediction
