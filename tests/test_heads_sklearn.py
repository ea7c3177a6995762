"""scikit-learn's own estimator checks (sklearn >= 1.6 API: parametrize_with_checks(expected_failed_checks=))
on the heads.

The Keras heads train for 5 epochs at a large learning rate: enough for the checks' accuracy thresholds
(check_classifiers_train wants > 0.83, check_class_weight_classifiers > 0.87). Each Keras fit costs about a
second, mostly TensorFlow tracing the training step, and the checks fit each head about 50 times: LogRegHead
and MLPHead (the default recipe; dropout, several layers) run in the quick subset too, about a minute on 2 busy cores.
LinearHead and SigmoidHead (the same KerasHead loop with other output layers; another ~80 s) are marked slow:
they run in the full suite (CI), not in the quick subset (-m 'not slow').

PoolDenseHead is left out: it needs spatial features (N, H, W, C), and every check passes 2-D X, which the
head refuses by design (a HeadError naming pooling='none').
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from bottleneck.heads import LinearHead, LogRegHead, MLPHead, SigmoidHead
from bottleneck.heads.keras_heads import KerasHead

KERAS = {"epochs": 5, "lr": 0.05}

# Checks every head is expected to fail, with the reason.
EXPECTED_FAILED = {
    "check_supervised_y_2d": (
        "a column-vector y (N, 1) is refused with HeadError ('pass one label per row, shape (N,)') instead of "
        "being raveled with a DataConversionWarning: heads raise on malformed input rather than warn"
    ),
}


# Keras heads compute in float32: a row's probabilities may differ in the last bits (3e-8 seen, Keras 3.15 /
# TF 2.21) with its position in the batch, which the check compares at rtol 1e-7. No decision changes.
KERAS_FAILED = {
    "check_methods_sample_order_invariance": "float32 Keras inference: last-bit differences with row position",
}


def expected_failed(estimator) -> dict[str, str]:
    return {**EXPECTED_FAILED, **(KERAS_FAILED if isinstance(estimator, KerasHead) else {})}


@parametrize_with_checks([LogRegHead(), MLPHead(**KERAS)], expected_failed_checks=expected_failed)
def test_sklearn_compatible_head(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([LinearHead(**KERAS), SigmoidHead(**KERAS)], expected_failed_checks=expected_failed)
def test_sklearn_compatible_keras_head_slow(estimator, check):
    check(estimator)
