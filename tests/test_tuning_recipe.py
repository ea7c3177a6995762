"""The fine-tuning settings: one frozen dataclass, every value checked once with a message naming the fix."""

from __future__ import annotations

import math

import pytest

from bottleneck.errors import BottleneckError, TuneError
from bottleneck.tuning.recipe import VIEW_AUGMENT, TuneSettings, lr_at


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0}, r"lr=0 is not allowed: a number in \(0, 1\]; e.g. lr=0.001"),
        ({"lr": float("nan")}, r"lr=nan is not allowed"),
        ({"lr_decay": 1.5}, r"lr_decay=1.5 is not allowed: a number in \(0, 1\]"),
        ({"momentum": 1}, r"momentum=1 is not allowed: a number in \[0, 1\)"),
        ({"weight_decay": -0.1}, r"weight_decay=-0.1 is not allowed: a number in \[0, 1\]"),
        ({"warmup": -1}, r"warmup=-1 is not allowed: a number in \[0, inf\]"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1.0 is not allowed: a number in \[0, 1\)"),
        ({"epochs": 0}, r"epochs=0 is not allowed: an integer of at least 1; e.g. epochs=1"),
        ({"epochs": 2.5}, r"epochs=2.5 is not allowed: an integer of at least 1"),
        ({"batch_size": True}, r"batch_size=True is not allowed"),
        ({"patience": -1}, r"patience=-1 is not allowed: an integer of at least 0"),
        ({"views": -2}, r"views=-2 is not allowed: None or an integer of at least 0"),
        ({"unfreeze": 0}, r"unfreeze=0 is not allowed: a number of top blocks \(1 or more\) or 'all'"),
        ({"unfreeze": "most"}, r"unfreeze='most' is not allowed"),
        (
            {"optimizer": "adamx"},
            r"unknown optimizer='adamx'; choose one of: adamw, adam, sgd.* Did you mean adam",
        ),
        ({"schedule": "linear"}, r"unknown schedule='linear'; choose one of: cosine, onecycle, constant"),
        ({"prefix_cache": "on"}, r"unknown prefix_cache='on'; choose one of: auto, off"),
        (
            {"augment": "flip,mirror"},
            r"unknown augment='mirror'; choose one of: flip, crop, rotate, zoom, contrast",
        ),
        ({"class_weight": "equal"}, r"class_weight='equal' is not allowed: None, 'balanced' or a dict"),
        ({"val_fraction": 1.0}, r"val_fraction=1.0 is not allowed: a number in \(0, 1\)"),
        ({"gradual": 1}, r"gradual=1 is not allowed: True or False"),
        ({"workers": 0}, r"workers=0 is not allowed: None or an integer of at least 1"),
        (
            {"views": 2, "prefix_cache": "off"},
            r"views=2 trains from cached activations, which prefix_cache='off'",
        ),
        ({"gradual": True, "unfreeze_from": "conv5"}, r"gradual=True unfreezes one block per epoch"),
        (
            {"lr_dacay": 0.5},
            r"unknown setting lr_dacay=0.5. Did you mean lr_decay, weight_decay\? Settings: unfreeze",
        ),
    ],
)
def test_each_bad_setting_is_one_clear_error(changes, message):
    with pytest.raises(BottleneckError, match=message) as info:
        TuneSettings.build(**changes)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, TuneError) or "unknown" in str(info.value)


def test_settings_normalise_and_record_the_recipe():
    s = TuneSettings.build(unfreeze="2", augment="zoom, crop,zoom", views=0)
    assert s.unfreeze == 2 and s.augment == ("zoom", "crop")
    assert TuneSettings(views=3).augment == VIEW_AUGMENT  # views without names: the label-preserving set
    recipe = TuneSettings(optimizer="sgd").recipe()
    assert recipe["momentum"] == 0.9 and "workers" not in recipe and "momentum" not in TuneSettings().recipe()
    assert TuneSettings().digest() != TuneSettings(lr=2e-3).digest()
    assert TuneSettings().digest() == TuneSettings(workers=4).digest()  # how fast, not what: same run
    with pytest.raises(Exception, match="cannot assign"):
        s.lr = 1.0  # frozen


def test_schedules():
    s = TuneSettings(lr=1.0, epochs=10, warmup=1.0, schedule="cosine")
    lrs = [lr_at(s, 1.0, step, 10) for step in range(100)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)  # warm-up: one epoch
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 1e-3  # then cosine down to ~0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    flat = TuneSettings(lr=1.0, schedule="constant", warmup=0)
    assert {lr_at(flat, 0.5, step, 10) for step in range(100)} == {0.5}
    one = TuneSettings(lr=1.0, epochs=10, schedule="onecycle")
    cyc = [lr_at(one, 1.0, step, 10) for step in range(100)]
    assert cyc[0] == pytest.approx(1 / 25) and max(cyc) == pytest.approx(1.0, abs=1e-3)
    assert 25 <= int(max(range(100), key=cyc.__getitem__)) <= 35 and cyc[-1] < 1e-3
    assert all(math.isfinite(x) for x in cyc)


def test_an_epoch_must_beat_the_start_by_more_than_the_noise():
    import numpy as np

    from bottleneck.tuning.selection import beats_start

    rng = np.random.default_rng(0)
    start = rng.exponential(0.4, 500)
    assert beats_start(start, start * 0.9)  # every row better: a real gain
    noisy = start + rng.normal(0, 0.3, 500)  # a lower mean by chance only
    noisy -= noisy.mean() - start.mean() + 0.005
    assert noisy.mean() < start.mean() and not beats_start(start, noisy)
    assert not beats_start(start, start)


class _ScriptedTrainer:
    """The loop's view of a trainer, with val results given per epoch: the selection and early stopping are
    decisions on those numbers alone, so they are tested on numbers chosen to tell the rules apart."""

    steps_per_epoch = 1
    rates = [0.0]  # the history records no learning rate

    def __init__(self, start, epochs):
        self.results, self.weights, self.epoch = [start, *epochs], [0.0], 0

    def evaluate(self, batches):
        return dict(self.results[self.epoch])

    def train_step(self, epoch, step, x, y, w):
        self.epoch = epoch
        self.weights = [float(epoch)]  # the weights are the epoch number: the kept ones say which epoch
        return 0.1, 1.0

    def reseed(self, epoch):
        pass

    def snapshot(self):
        return list(self.weights)

    def restore(self, values):
        self.weights = list(values)


class _OneBatch:
    n_rows = 1

    def epoch(self, epoch):
        yield None, [0], None

    def batches(self):
        return []


def _val(rows, accuracy=0.9, temperature=1.5):
    import numpy as np

    rows = np.asarray(rows, np.float64)
    return {
        "val_loss": float(rows.mean()),
        "val_loss_uncalibrated": float(rows.mean()) + 0.05,
        "temperature": temperature,
        "val_accuracy": accuracy,
        "rows": rows,
    }


def test_early_stopping_waits_for_a_run_that_comes_back_below_the_start():
    """Epochs 1-2 above the start (a high learning rate's first epochs), 3-4 below it within the noise, 5 well
    below: patience 3 counts from the lowest val loss so far, so the run reaches epoch 5 and keeps it with its
    temperature (counting from the last epoch the selection would keep, it stopped after epoch 4)."""
    import numpy as np

    from bottleneck.tuning.loop import train
    from bottleneck.tuning.recipe import TuneSettings

    rng = np.random.default_rng(0)
    start = rng.exponential(0.35, 400)

    def noisy(shift):  # rows whose mean is the start's + shift, with noise far above the shift
        rows = start + rng.normal(0, 0.4, len(start))
        return rows - rows.mean() + start.mean() + shift

    epochs = [
        _val(start + 0.18),
        _val(start + 0.09),
        _val(noisy(-0.004)),  # the lowest so far, but within the noise: not kept
        _val(noisy(-0.003)),
        _val(start * 0.85, accuracy=0.92, temperature=1.9),
        _val(start * 0.86, accuracy=0.92),
    ]
    trainer = _ScriptedTrainer(_val(start, accuracy=0.9, temperature=1.2), epochs)
    settings = TuneSettings(epochs=6, patience=3)
    out = train(trainer, _OneBatch(), _OneBatch(), settings)
    assert out.best_epoch == 5 and out.temperature == 1.9 and trainer.weights == [5.0]
    assert out.stopped_early is None and len(out.history["val_loss"]) == 6
    assert out.history["temperature"][4] == 1.9 and out.start["temperature"] == 1.2
    # Nothing below the start after the first epochs: patience 3 stops after epoch 3, and the start is kept.
    trainer = _ScriptedTrainer(_val(start), [_val(start + 0.2 - 0.01 * e) for e in range(6)][::-1])
    out = train(trainer, _OneBatch(), _OneBatch(), settings)
    assert (
        out.stopped_early == 3 and out.best_epoch == 0 and out.temperature == 1.0 and trainer.weights == [0.0]
    )


@pytest.mark.parametrize("patience", [0, 1, 2, 4])
def test_fine_tune_patience_stops_where_keras_early_stopping_does(patience):
    """fine-tune's --patience means what fit-head's (Keras' EarlyStopping) means: stop after that many epochs in a
    row without a new lowest val loss (0 and 1 alike stop at the first). The start is the first value Keras sees
    (its epoch 0), so it is the lowest to beat, as in fine-tune."""
    import keras

    from bottleneck.tuning.selection import EarlyStopping

    start = 1.0
    losses = [1.2, 0.9, 0.95, 0.8, 0.85, 0.86, 0.87, 0.88, 0.7, 0.9, 0.91, 0.92, 0.93, 0.94]
    ours = EarlyStopping(start, patience)
    stopped_ours = None
    for epoch, loss in enumerate(losses, 1):
        ours.update(loss)
        if ours.stops(epoch, len(losses)):
            stopped_ours = epoch
            break

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    theirs = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    theirs.set_model(model)
    model.stop_training = False
    theirs.on_train_begin()
    stopped_keras = None
    for epoch, loss in enumerate([start, *losses]):
        theirs.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            stopped_keras = epoch
            break
    assert stopped_ours == stopped_keras == {0: 1, 1: 1, 2: 6, 4: 8}[patience]
