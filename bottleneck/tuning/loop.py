"""The fine-tuning loop: the start model is epoch 0, learning rates by depth on a schedule, a selection that never
keeps a model worse than the start, early stopping, a checkpoint per epoch to resume from, a line per epoch.

Selection: an epoch is a candidate when its val accuracy is at least the start's and its calibrated val loss
(cross-entropy after one temperature fitted on val, never smoothed; ``tuning.calibrate``) is below the start's,
calibrated the same way, by more than one standard error of the per-row difference; the kept weights are those of
the candidate with the lowest calibrated val loss, with its temperature folded into the head, or the start's
unchanged when there is none. So the result is never below the start on val, and a gain within the noise of the
val set is not taken for one. The selection, early stopping and the checkpoint are objects of
``tuning.selection``; an epoch is trained, recorded, weighed and saved as steps of ``train``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bottleneck import _tf
from bottleneck.tuning.calibrate import fit_temperature, log_probs, tempered_losses
from bottleneck.tuning.recipe import TuneSettings, group_rates, lr_at
from bottleneck.tuning.selection import Checkpoint, EarlyStopping, Selection

EPSILON = 1e-7  # probabilities are clipped here before the log (Keras' own epsilon)


class TuneInterrupted(KeyboardInterrupt):
    """Ctrl-C during fine-tuning; the message says what was saved and how to resume."""


@dataclass
class Outcome:
    """What training did: per-epoch history, which weights were kept and why it stopped."""

    # loss, accuracy, val_loss (calibrated), val_loss_uncalibrated, temperature, val_accuracy, seconds, lr: one
    # entry per epoch run (1..n)
    history: dict
    start: dict  # {"val_loss", "val_loss_uncalibrated", "temperature", "val_accuracy"} of the start (epoch 0)
    best_epoch: int  # 0: the start weights were kept
    stopped_early: int | None = None  # the last epoch run, when early stopping ended training
    resumed_from: int = 0  # epochs taken from a checkpoint
    notes: list = field(default_factory=list)
    temperature: float = 1.0  # folded into the kept epoch's head (1 when the start is kept)


def make_optimizer(settings: TuneSettings, lr: float):
    keras = _tf.keras()
    wd = settings.weight_decay or None
    if settings.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=settings.momentum, weight_decay=wd)
    elif settings.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=settings.weight_decay)
    else:
        opt = keras.optimizers.Adam(lr)
    if wd and settings.optimizer != "adam":
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def _loss(tf, p, y, w, smoothing: float):
    """Mean over the batch of (row weight x) cross-entropy against labels smoothed by ``smoothing``."""
    logp = tf.math.log(tf.clip_by_value(p, EPSILON, 1.0))
    ce = -tf.gather(logp, y, axis=1, batch_dims=1)
    if smoothing:
        ce = (1.0 - smoothing) * ce - smoothing * tf.reduce_mean(logp, axis=1)
    if w is not None:
        ce = ce * w
    return tf.reduce_mean(ce)


class Trainer:
    """Trains ``model`` (float input -> probabilities) with one optimizer per depth group of ``groups`` (lists of
    variables, the head first); ``state`` are the variables training changes (snapshot and restored)."""

    def __init__(
        self,
        model,
        groups: list[list],
        state: list,
        settings: TuneSettings,
        steps_per_epoch: int,
        *,
        calibrate: bool = True,
    ):
        tf = _tf.tensorflow()
        self.calibrate = calibrate  # False: a head with no Dense softmax / sigmoid to fold a temperature into
        self.tf, self.model, self.settings = tf, model, settings
        self.groups = [g for g in groups if g]
        self.rates = group_rates(settings, len(groups))
        self.rates = [r for r, g in zip(self.rates, groups, strict=True) if g]
        self.optimizers = [make_optimizer(settings, r) for r in self.rates]
        for opt, g in zip(self.optimizers, self.groups, strict=True):
            opt.build(g)
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self._steps: dict[int, object] = {}

        @tf.function(reduce_retracing=True)
        def forward(x):
            return model(x, training=False)

        self._forward = forward

    def active(self, epoch: int) -> int:
        """How many groups train in ``epoch`` (1-based): all, or with gradual unfreezing one block more each epoch."""
        return min(len(self.groups), epoch + 1) if self.settings.gradual else len(self.groups)

    def _step_fn(self, n_active: int):
        if n_active in self._steps:
            return self._steps[n_active]
        tf, model, smoothing = self.tf, self.model, float(self.settings.label_smoothing)
        groups, optimizers = self.groups[:n_active], self.optimizers[:n_active]
        variables = [v for g in groups for v in g]

        @tf.function(reduce_retracing=True)
        def step(x, y, w):
            with tf.GradientTape() as tape:
                p = model(x, training=True)
                loss = _loss(tf, p, y, w, smoothing)
            grads = tape.gradient(loss, variables)
            i = 0
            for opt, g in zip(optimizers, groups, strict=True):
                opt.apply_gradients(zip(grads[i : i + len(g)], g, strict=True))
                i += len(g)
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(p, axis=1, output_type=y.dtype), y), tf.float32)
            )
            return loss, correct

        self._steps[n_active] = step
        return step

    def train_step(self, epoch: int, step: int, x, y, w) -> tuple[float, float]:
        """One step; ``step`` counts from the start of training (the schedule's position)."""
        for opt, peak in zip(self.optimizers, self.rates, strict=True):
            opt.learning_rate = lr_at(self.settings, peak, step, self.steps_per_epoch)
        tf = self.tf
        wt = None if w is None else tf.constant(w, tf.float32)
        loss, correct = self._step_fn(self.active(epoch))(
            tf.constant(x, tf.float32), tf.constant(y, tf.int64), wt
        )
        return float(loss), float(correct)

    def evaluate(self, batches) -> dict:
        """{"val_loss", "val_loss_uncalibrated", "temperature", "val_accuracy", "rows"}: the (row-weighted)
        cross-entropy after the temperature fitted on these rows (1 without calibration), before it, accuracy,
        and each row's calibrated loss."""
        probs, labels, weights = [], [], []
        for x, y, w in batches:
            probs.append(np.asarray(self._forward(self.tf.constant(x, self.tf.float32)), np.float64))
            labels.append(np.asarray(y))
            weights.append(None if w is None else np.asarray(w, np.float64))
        if not probs:
            return {"val_loss": 0.0, "val_loss_uncalibrated": 0.0, "temperature": 1.0, "val_accuracy": 0.0,
                    "rows": np.zeros(0)}  # fmt: skip
        p, y = np.concatenate(probs), np.concatenate(labels)
        w = None if weights[0] is None else np.concatenate(weights)
        t = fit_temperature(p, y, w) if self.calibrate else 1.0
        logp = log_probs(p)
        raw, rows = tempered_losses(logp, y, 1.0), tempered_losses(logp, y, t)
        if w is not None:
            raw, rows = raw * w, rows * w
        return {
            "val_loss": float(rows.mean()),
            "val_loss_uncalibrated": float(raw.mean()),
            "temperature": t,
            "val_accuracy": float((p.argmax(1) == y).mean()),
            "rows": rows,
        }

    def reseed(self, epoch: int) -> None:
        """Random layers (dropout) draw from a state set per epoch: an epoch is the same whether the run went
        straight through or resumed before it."""
        for i, layer in enumerate(self.model._flatten_layers()):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(np.array([int(self.settings.seed) * 1000003 + i, epoch], np.int64))

    def snapshot(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.state]

    def restore(self, values: list[np.ndarray]) -> None:
        for v, value in zip(self.state, values, strict=True):
            v.assign(value)

    def optimizer_arrays(self) -> dict:
        return {
            f"o{g}_{j}": np.array(v.numpy())
            for g, opt in enumerate(self.optimizers)
            for j, v in enumerate(opt.variables)
        }

    def load_optimizers(self, arrays: dict) -> None:
        for g, opt in enumerate(self.optimizers):
            for j, v in enumerate(opt.variables):
                v.assign(arrays[f"o{g}_{j}"])


# One entry per epoch run in Outcome.history, in this order.
HISTORY_KEYS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_loss_uncalibrated",
    "temperature",
    "val_accuracy",
    "seconds",
    "lr",
)


@dataclass(frozen=True)
class EpochFit:
    """One epoch of training: mean loss and accuracy over its rows, and its time."""

    loss: float
    accuracy: float
    seconds: float


def _fit_epoch(trainer: Trainer, train_data, epoch: int, epochs: int, progress) -> EpochFit:
    t0 = time.perf_counter()
    loss = correct = seen = 0.0
    step0 = (epoch - 1) * trainer.steps_per_epoch
    trainer.reseed(epoch)
    for i, (x, y, w) in enumerate(train_data.epoch(epoch)):
        step_loss, step_correct = trainer.train_step(epoch, step0 + i, x, y, w)
        loss += step_loss * len(y)
        correct += step_correct
        seen += len(y)
        if progress:
            progress(f"epoch {epoch}/{epochs}", int(seen), train_data.n_rows)
    return EpochFit(loss / max(seen, 1), correct / max(seen, 1), time.perf_counter() - t0)


def _record(history: dict, fit: EpochFit, val: dict, trainer: Trainer) -> None:
    history["loss"].append(fit.loss)
    history["accuracy"].append(fit.accuracy)
    for k in ("val_loss", "val_loss_uncalibrated", "temperature", "val_accuracy"):
        history[k].append(val[k])
    history["seconds"].append(round(fit.seconds, 3))
    history["lr"].append(trainer.rates[0] and float(trainer.optimizers[0].learning_rate))


def _save_epoch(
    checkpoint: Checkpoint,
    epoch: int,
    trainer: Trainer,
    selection: Selection,
    stopping: EarlyStopping,
    history,
) -> None:
    arrays = {f"w{i}": a for i, a in enumerate(trainer.snapshot())}
    if selection.weights is not None:
        arrays |= {f"b{i}": a for i, a in enumerate(selection.weights)}
    arrays |= trainer.optimizer_arrays()
    state = {
        "epoch": epoch,
        "history": history,
        "best": selection.best,
        "bad": stopping.bad,
        "lowest": stopping.lowest,
    }
    checkpoint.save(state, arrays)


def _resume(
    saved: tuple[dict, dict], trainer: Trainer, selection: Selection, stopping: EarlyStopping
) -> dict:
    """Restore the state a checkpoint saved after its last whole epoch; returns the history so far."""
    state, arrays = saved
    selection.best = state["best"]
    stopping.bad, stopping.lowest = state["bad"], state["lowest"]
    trainer.restore([arrays[f"w{i}"] for i in range(len(trainer.state))])
    if selection.epoch:
        selection.weights = [arrays[f"b{i}"] for i in range(len(trainer.state))]
    trainer.load_optimizers(arrays)
    return state["history"]


def _epoch_line(epoch: int, epochs: int, fit: EpochFit, val: dict, better: bool) -> str:
    return (
        f"epoch {epoch}/{epochs}: {fit.seconds:.1f} s, loss {fit.loss:.4f}, "
        f"val loss {val['val_loss']:.4f} (calibrated, T={val['temperature']:.2f}; "
        f"{val['val_loss_uncalibrated']:.4f} before), val accuracy {val['val_accuracy']:.4f}"
        + (" (best)" if better else "")
    )


def _interrupted(epoch: int, epochs: int, checkpoint: Checkpoint | None) -> TuneInterrupted:
    done = epoch - 1
    where = (
        f"epochs 1-{done} are saved in {checkpoint.folder}; run the same command to resume"
        if checkpoint is not None and done >= 1
        else "nothing was saved"
    )
    return TuneInterrupted(f"fine-tuning stopped in epoch {epoch} of {epochs}; {where}.")


def train(
    trainer: Trainer,
    train_data,
    val_data,
    settings: TuneSettings,
    *,
    checkpoint: Checkpoint | None = None,
    progress=None,
    notify=None,
) -> Outcome:
    """Epoch 0 (the start) on val, then up to ``settings.epochs`` epochs; the kept weights are restored in the model.

    ``train_data.epoch(e)`` yields (x, y, row weights | None) batches of epoch e (1-based) and has ``rows``;
    ``val_data.batches()`` yields the val batches in a fixed order.
    """
    notify = notify or (lambda line: None)
    history = {k: [] for k in HISTORY_KEYS}
    selection = Selection.of_start(trainer.evaluate(val_data.batches()))
    start = selection.start
    start_weights = trainer.snapshot()
    stopping = EarlyStopping(start["val_loss"], settings.patience)
    first = 1
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        history = _resume(resumed, trainer, selection, stopping)
        first = resumed[0]["epoch"] + 1
        notify(f"resuming after epoch {first - 1} of {settings.epochs} (checkpoint in {checkpoint.folder})")
    else:
        notify(
            f"epoch 0 (the start): val loss {start['val_loss']:.4f} (calibrated, T={start['temperature']:.2f}; "
            f"{start['val_loss_uncalibrated']:.4f} before), val accuracy {start['val_accuracy']:.4f}"
        )
    stopped = None
    epoch = first - 1
    try:
        for epoch in range(first, settings.epochs + 1):
            fit = _fit_epoch(trainer, train_data, epoch, settings.epochs, progress)
            val = trainer.evaluate(val_data.batches())
            rows = val.pop("rows")
            _record(history, fit, val, trainer)
            better = selection.consider(epoch, val, rows, trainer.snapshot)
            stopping.update(val["val_loss"])
            notify(_epoch_line(epoch, settings.epochs, fit, val, better))
            if checkpoint is not None:
                _save_epoch(checkpoint, epoch, trainer, selection, stopping, history)
            if stopping.stops(epoch, settings.epochs):
                stopped = epoch
                notify(
                    f"stopping early after epoch {epoch}: no better val loss for {stopping.bad} epoch(s) "
                    f"(patience {settings.patience}); keeping epoch {selection.epoch}"
                )
                break
    except KeyboardInterrupt:
        raise _interrupted(epoch, settings.epochs, checkpoint) from None
    return _outcome(trainer, selection, start_weights, history, stopped, first - 1, notify)


def _outcome(
    trainer, selection: Selection, start_weights, history, stopped, resumed_from: int, notify
) -> Outcome:
    """The kept weights restored in the model, and what training did."""
    trainer.restore(selection.weights if selection.epoch else start_weights)
    start, best = selection.start, selection.best
    out = Outcome(
        history,
        start,
        best["epoch"],
        stopped,
        resumed_from,
        temperature=best["temperature"] if best["epoch"] else 1.0,
    )
    if best["epoch"] == 0:
        line = (
            f"kept the start weights: no epoch beat the start's calibrated val loss {start['val_loss']:.4f} by more "
            f"than its standard error at a val accuracy of at least {start['val_accuracy']:.4f}"
        )
        notify(line)
        out.notes.append(line)
    return out
