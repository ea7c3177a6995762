"""Keras heads (linear, MLP, sigmoid, pool-dense) with one training loop: Adam, early stopping, best weights.

Keras is imported inside methods, so importing bottleneck.heads (and the logreg head) never starts TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.backbones.model_file import load_keras
from bottleneck.callbacks import Progress
from bottleneck.constraints import (
    BATCH_SIZE,
    CLASS_WEIGHT,
    EPOCHS,
    FRACTION,
    LEARNING_RATE,
    OPTIONAL_SEED,
    PATIENCE,
    Boolean,
    Interval,
    Options,
)
from bottleneck.errors import HeadError
from bottleneck.heads.base import Head
from bottleneck.heads.checks import check_finite, class_weights, stratified_holdout
from bottleneck.heads.feature_blocks import available_memory, iter_blocks, nbytes, to_memory

MODEL_FILE = "model.keras"


class KerasHead(Head):
    """Shared training loop; subclasses build the layers between the normalised input and the output.

    Common parameters: ``epochs`` (maximum), ``batch_size`` ("auto": training rows // 32, between 16 and
    256, so a few hundred images still get enough steps per epoch and 50k do not pay per-step overhead),
    ``lr`` (Adam), ``patience`` (epochs without a
    lower validation loss before stopping; the best epoch's weights are restored), ``class_weight``
    (None | "balanced" | {label: weight}; weighs the validation loss too, so early stopping judges the
    weighted problem), ``val_fraction`` (held out of train when no validation data is passed),
    ``in_memory`` ("auto": load the arrays when they take under half the available RAM, else stream
    batches from the store; True / False to force), ``random_state`` (seeds the held-out part, the weight
    initialisers, dropout and the batch order, each with its own generator: fitting never reseeds Python's,
    NumPy's or TensorFlow's global random state, so the same random_state gives the same head wherever it
    is fitted and the caller's own random sequences go on undisturbed).

    Learned: ``classes_``, ``feature_shape_``, ``model_`` (keras.Model, probabilities out), ``history_``
    ({"loss", "accuracy", "val_loss", "val_accuracy"} per epoch, and "best_epoch"), ``holdout_``,
    ``streamed_`` (whether training read batches from disk), ``batch_size_`` (the batch size used).
    """

    _fitted_attr = "model_"
    model_file = MODEL_FILE
    _parameter_constraints = {
        "epochs": EPOCHS,
        "batch_size": [BATCH_SIZE, Options(("auto",))],
        "lr": LEARNING_RATE,
        "patience": PATIENCE,
        "class_weight": CLASS_WEIGHT,
        "val_fraction": FRACTION,
        "in_memory": [Options(("auto",)), Boolean()],
        "random_state": OPTIONAL_SEED,
    }

    def __init__(
        self,
        epochs: int = 50,
        batch_size: int | str = "auto",
        lr: float = 1e-3,
        patience: int = 5,
        class_weight: str | None = None,
        val_fraction: float = 0.1,
        in_memory: str | bool = "auto",
        random_state: int | None = 0,
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.class_weight = class_weight
        self.val_fraction = val_fraction
        self.in_memory = in_memory
        self.random_state = random_state

    # Subclasses: check the feature shape and number of classes, and build the layers.
    def _check_problem(self, n_classes: int) -> None:
        pass

    def _build_body(self, x, n_classes: int, seeds: _LayerSeeds):
        """The layers after normalisation; every layer with random weights or randomness takes ``seeds()``."""
        raise NotImplementedError

    @property
    def _binary(self) -> bool:
        return False

    def fit(self, X, y, X_val=None, y_val=None, progress: Progress | None = None):
        """Fit on X (N, *feature_shape) array-like and labels y (N,); early-stop on (X_val, y_val) or on a
        stratified part of train. Reports ("epoch", done, epochs) through ``progress``."""
        self._validate_params()
        X, yi, X_val, yvi = self._start_fit(X, y, X_val, y_val)
        n_classes = len(self.classes_)
        self._check_problem(n_classes)

        _tf.configure_threads()
        keras = _tf.keras()

        seed = 0 if self.random_state is None else int(self.random_state)

        rows = np.arange(int(X.shape[0]))
        self.holdout_ = None
        if X_val is None:
            rows, self.holdout_ = stratified_holdout(yi, self.val_fraction, seed)
        bs = self.batch_size
        self.batch_size_ = int(min(256, max(16, len(rows) // 32)) if bs == "auto" else bs)
        budget = available_memory() // 2
        need = nbytes(X) + (nbytes(X_val) if X_val is not None else 0)
        self.streamed_ = self.in_memory is False or (self.in_memory == "auto" and need > budget)

        if not self.streamed_:
            X = to_memory(X)
            X_val = None if X_val is None else to_memory(X_val)
        mean, var = _channel_stats(X, rows)
        if X_val is not None:
            for _, block in iter_blocks(X_val):
                check_finite(block, "X_val")

        inputs = keras.Input(self.feature_shape_)
        x = keras.layers.Normalization(axis=-1, mean=mean, variance=var)(inputs)
        outputs = self._build_body(x, n_classes, _LayerSeeds(seed))
        model = keras.Model(inputs, outputs, name=f"{self.name.replace('-', '_')}_head")
        model.compile(
            optimizer=keras.optimizers.Adam(self.lr),
            loss="binary_crossentropy" if self._binary else "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        from bottleneck.heads.streaming import ArrayBatches

        # Batches come from ArrayBatches in memory too: model.fit's own shuffle (of arrays, or of a PyDataset's
        # batches) draws from TensorFlow's or Python's global generator, which only a process-wide reseed makes
        # repeatable. ArrayBatches orders rows with np.random.default_rng((seed, epoch)).
        # Class weights come as row weights of training and validation batches alike: early stopping on an
        # unweighted validation loss would restore the epoch that suits the unweighted problem, undoing them.
        weights = class_weights(self.class_weight, self.classes_, yi[rows])
        train = ArrayBatches(X, yi, rows, self.batch_size_, shuffle=True, seed=seed, class_weights=weights)
        if X_val is None:
            X_val, yvi, val_rows = X, yi, self.holdout_
        else:
            val_rows = np.arange(int(X_val.shape[0]))
        val = ArrayBatches(X_val, yvi, val_rows, self.batch_size_, shuffle=False, class_weights=weights)
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True
            )
        ]
        if progress:
            callbacks.append(_ProgressCallback(progress, self.epochs))
        hist = model.fit(
            train,
            validation_data=val,
            shuffle=False,
            epochs=self.epochs,
            callbacks=callbacks,
            verbose=0,
        )
        self.model_ = model
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        losses = self.history_.get("val_loss", [])
        self.history_["best_epoch"] = int(np.argmin(losses)) + 1 if losses else len(losses)
        return self

    def _proba(self, block: np.ndarray) -> np.ndarray:
        p = np.asarray(self.model_.predict_on_batch(block.astype(np.float32, copy=False)), np.float64)
        if self._binary:
            p = np.concatenate([1.0 - p, p], axis=1)
        return p

    def _save_model(self, path: Path) -> None:
        self.model_.save(path / MODEL_FILE)

    def _load_model(self, path: Path, info: dict) -> None:

        self.model_ = load_keras(
            path / MODEL_FILE, HeadError, f"the saved {self.name} head is unusable: fit it again"
        )
        self.holdout_ = None

    def _check_loaded(self) -> None:
        """The loaded model takes ``feature_shape_`` and gives one output per class (one for sigmoid), finite."""
        inputs = tuple(self.model_.inputs[0].shape[1:])
        outputs = int(self.model_.outputs[0].shape[-1])
        want = 1 if self.name == "sigmoid" else len(self.classes_)
        if inputs != tuple(self.feature_shape_) or outputs != want:
            raise HeadError(
                f"the saved {self.name} head takes {inputs} and gives {outputs} outputs, but its head.json says "
                f"{tuple(self.feature_shape_)} and {want} ({len(self.classes_)} classes): the files do not belong "
                "together. Fit the head again."
            )
        if not all(np.all(np.isfinite(w)) for w in self.model_.get_weights()):
            raise HeadError(f"the saved {self.name} head has NaN or infinite weights; fit it again.")


class LinearHead(KerasHead):
    """Softmax regression: Flatten -> Dense(n_classes, softmax)."""

    name = "linear"

    def _build_body(self, x, n_classes, seeds):
        keras = _tf.keras()

        if len(self.feature_shape_) > 1:
            x = keras.layers.Flatten()(x)
        return _dense(n_classes, "softmax", seeds)(x)


class MLPHead(KerasHead):
    """The classic bottleneck-recipe head: [Dense(width, relu) -> Dropout(dropout)] x depth -> softmax."""

    name = "mlp"
    _parameter_constraints = KerasHead._parameter_constraints | {
        "width": Interval(int, 1, None, example=256),
        "depth": Interval(int, 1, None, example=1),
        "dropout": Interval(float, 0, 1, closed="left", example=0.5),
    }

    def __init__(
        self,
        width: int = 256,
        depth: int = 1,
        dropout: float = 0.5,
        epochs: int = 50,
        batch_size: int | str = "auto",
        lr: float = 1e-3,
        patience: int = 5,
        class_weight: str | None = None,
        val_fraction: float = 0.1,
        in_memory: str | bool = "auto",
        random_state: int | None = 0,
    ):
        super().__init__(
            epochs, batch_size, lr, patience, class_weight, val_fraction, in_memory, random_state
        )
        self.width = width
        self.depth = depth
        self.dropout = dropout

    def _build_body(self, x, n_classes, seeds):
        keras = _tf.keras()

        if len(self.feature_shape_) > 1:
            x = keras.layers.Flatten()(x)
        for _ in range(self.depth):
            x = _dense(self.width, "relu", seeds)(x)
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, seed=seeds())(x)
        return _dense(n_classes, "softmax", seeds)(x)


class SigmoidHead(KerasHead):
    """Two-class head: Flatten -> Dense(1, sigmoid), binary cross-entropy; probabilities are [1 - p, p]."""

    name = "sigmoid"

    @property
    def _binary(self) -> bool:
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _check_problem(self, n_classes):
        if n_classes != 2:
            # Starts with scikit-learn's wording for binary-only classifiers, which its checks look for.
            raise HeadError(
                f"Only binary classification is supported: the sigmoid head is for exactly 2 classes, but y has "
                f"{n_classes} ({', '.join(map(str, self.classes_[:10]))}); use head='linear', 'mlp' or 'logreg'."
            )

    def _build_body(self, x, n_classes, seeds):
        keras = _tf.keras()

        if len(self.feature_shape_) > 1:
            x = keras.layers.Flatten()(x)
        return _dense(1, "sigmoid", seeds)(x)


class PoolDenseHead(KerasHead):
    """For spatial caches (``--pooling none``): Global{Max,Average}Pooling2D -> Dense(width, relu) ->
    Dropout -> softmax (the hand-signs recipe)."""

    name = "pool-dense"
    _parameter_constraints = KerasHead._parameter_constraints | {
        "pool": Options(("max", "avg")),
        "width": Interval(int, 1, None, example=128),
        "dropout": Interval(float, 0, 1, closed="left", example=0.5),
    }

    def __init__(
        self,
        pool: str = "max",
        width: int = 128,
        dropout: float = 0.0,
        epochs: int = 50,
        batch_size: int | str = "auto",
        lr: float = 1e-3,
        patience: int = 5,
        class_weight: str | None = None,
        val_fraction: float = 0.1,
        in_memory: str | bool = "auto",
        random_state: int | None = 0,
    ):
        super().__init__(
            epochs, batch_size, lr, patience, class_weight, val_fraction, in_memory, random_state
        )
        self.pool = pool
        self.width = width
        self.dropout = dropout

    def _check_problem(self, n_classes):
        if len(self.feature_shape_) != 3:
            raise HeadError(
                f"the pool-dense head needs spatial features (N, H, W, C) but these have shape "
                f"(N, {', '.join(map(str, self.feature_shape_))}); extract with pooling='none', "
                "or use head='mlp', 'linear' or 'logreg' on pooled features."
            )

    def _build_body(self, x, n_classes, seeds):
        keras = _tf.keras()

        pool = keras.layers.GlobalMaxPooling2D if self.pool == "max" else keras.layers.GlobalAveragePooling2D
        x = pool()(x)
        x = _dense(self.width, "relu", seeds)(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, seed=seeds())(x)
        return _dense(n_classes, "softmax", seeds)(x)


class _LayerSeeds:
    """Distinct seeds for the random layers of one model, from a child of random_state's SeedSequence (so
    they are independent of the holdout's default_rng(seed) and the batch order's default_rng((seed, epoch))).

    A Keras initializer or Dropout without a seed draws one from Python's global ``random``, which is why
    heads used to reseed the whole process; with these, each layer is seeded on its own.
    """

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])

    def __call__(self) -> int:
        return int(self._rng.integers(2**31 - 1))


def _dense(units: int, activation: str, seeds: _LayerSeeds):
    """Dense with Keras's default Glorot-uniform kernel, seeded; the bias starts at zero (not random)."""
    keras = _tf.keras()

    return keras.layers.Dense(
        units, activation=activation, kernel_initializer=keras.initializers.GlorotUniform(seed=seeds())
    )


def _channel_stats(X, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per channel (last axis) over ``rows``, in float64, one pass over blocks; refuses
    NaN / inf on the way (a NaN would silently turn every prediction into NaN)."""
    c = X.shape[-1]
    total = 0
    s = np.zeros(c)
    ss = np.zeros(c)
    for _, block in iter_blocks(X, rows):
        check_finite(block)
        b = block.reshape(-1, c).astype(np.float64)
        s += b.sum(axis=0)
        ss += (b * b).sum(axis=0)
        total += len(b)
    mean = s / total
    var = np.maximum(ss / total - mean * mean, 0.0)
    var = np.where(var > 1e-12, var, 1.0)  # constant channels pass through unscaled
    return mean, var


class _ProgressCallback:
    """Adapter from Keras epochs to the library's progress callback (built lazily: keras.callbacks.Callback)."""

    def __new__(cls, progress: Progress, epochs: int):
        keras = _tf.keras()

        class _CB(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                progress("epoch", epoch + 1, epochs)

        return _CB()
