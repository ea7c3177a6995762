"""Temperature scaling (Guo et al., 2017) for the fine-tuning selection and the kept model.

Fine-tuning makes a network confident faster than it makes it right: on Fashion-MNIST (README) the val accuracy
of later epochs rose while their plain val loss rose too, so a selection on plain val loss kept the start although
test accuracy had gained 1.7 points (lr 3e-4, 4 views, 12 epochs). Dividing the logits by one temperature fitted
on val separates the two: the calibrated val loss measures how well the model ranks the classes, and it fell epoch after epoch with the test
loss. The selection compares calibrated losses (the start's calibrated the same way), and the kept epoch's
temperature is folded into the head's last Dense layer, so the saved and exported model gives the calibrated
probabilities with no extra layer.
"""

from __future__ import annotations

import numpy as np

from bottleneck import _tf

# The range searched, in temperature: wide enough for any sane network (a fitted T is ~0.7-3 in practice).
T_LOW, T_HIGH = 0.05, 20.0
TINY = 1e-12  # probabilities are clipped here before the log (float32 softmax can round to 0)


def log_probs(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, np.float64), TINY, 1.0))


def tempered_losses(logp: np.ndarray, y: np.ndarray, temperature: float) -> np.ndarray:
    """Each row's cross-entropy of softmax(log p / T): for a softmax output log p is the logits up to a constant
    per row, so this is exactly softmax(logits / T); for a sigmoid head's [1 - p, p] it is sigmoid(z / T)."""
    z = logp / temperature
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return lse - z[np.arange(len(y)), y]


def fit_temperature(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """The T minimising the (row-weighted) mean cross-entropy of the tempered probabilities ``p`` on labels ``y``."""
    from scipy.optimize import minimize_scalar

    logp = log_probs(p)
    weights = None if w is None else np.asarray(w, np.float64)

    def loss(log_t: float) -> float:
        rows = tempered_losses(logp, y, float(np.exp(log_t)))
        return float(rows.mean() if weights is None else (rows * weights).mean())

    if len(y) == 0:
        return 1.0
    found = minimize_scalar(
        loss, bounds=(np.log(T_LOW), np.log(T_HIGH)), method="bounded", options={"xatol": 1e-4}
    )
    return float(np.exp(found.x))


def output_layer(head):
    """The head's last Dense layer with a softmax or sigmoid activation (every built-in head ends in one), or None:
    the layer a temperature folds into."""
    keras = _tf.keras()
    found = None
    for layer in head._flatten_layers(include_self=False, recursive=True):
        if layer.name == "head_two_class":  # the sigmoid head's fixed [1 - p, p]: not where the logits are
            continue
        if isinstance(layer, keras.layers.Dense):
            activation = getattr(layer.activation, "__name__", "")
            if activation in ("softmax", "sigmoid"):
                found = layer
    return found


def fold_temperature(layer, temperature: float) -> None:
    """Divide the logits of ``layer`` (a Dense softmax / sigmoid) by ``temperature``: kernel and bias / T."""
    layer.kernel.assign(layer.kernel.numpy() / np.float32(temperature))
    if layer.use_bias:
        layer.bias.assign(layer.bias.numpy() / np.float32(temperature))
