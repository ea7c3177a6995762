"""What fine-tuning keeps and when it stops: the selection that never keeps a model worse than the start (one
standard error on calibrated val loss), early stopping, and the checkpoint of the last whole epoch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck._io import replace_atomic, temp_path, write_json_atomic

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_STATE = "checkpoint.json"
SELECTION = "calibrated-1se"  # the selection rule (part of a checkpoint's identity)


class Checkpoint:
    """The state after the last whole epoch, in a folder (the run's partial folder): resumed by the same recipe."""

    def __init__(self, folder: Path, digest: str):
        self.folder, self.digest = Path(folder), digest

    def load(self) -> tuple[dict, dict] | None:
        try:
            state = json.loads((self.folder / CHECKPOINT_STATE).read_text())
            if state.get("digest") != self.digest:
                return None
            with np.load(self.folder / CHECKPOINT) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            return None
        return state, arrays

    def save(self, state: dict, arrays: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(self.folder / CHECKPOINT, suffix=".npz")
        np.savez(tmp, **arrays)
        replace_atomic(tmp, self.folder / CHECKPOINT)
        write_json_atomic(self.folder / CHECKPOINT_STATE, {**state, "digest": self.digest})

    def remove(self) -> None:
        for name in (CHECKPOINT, CHECKPOINT_STATE):
            (self.folder / name).unlink(missing_ok=True)


def beats_start(start_rows: np.ndarray, rows: np.ndarray) -> bool:
    """Whether per-row val losses ``rows`` are lower than the start's by more than one standard error of the paired
    difference: a lower mean on a few hundred rows is often noise, and keeping noise costs test accuracy."""
    d = np.asarray(start_rows, np.float64) - np.asarray(rows, np.float64)
    if len(d) < 2:
        return bool(d.sum() > 0)
    return bool(d.mean() > d.std(ddof=1) / np.sqrt(len(d)))


@dataclass
class Selection:
    """Which weights are kept: an epoch whose val accuracy is at least the start's and whose calibrated val loss
    beats the start's by more than one standard error (``beats_start``), the lowest such; the start (epoch 0) when
    no epoch does."""

    start: dict  # the start's val_loss, val_loss_uncalibrated, temperature, val_accuracy
    start_rows: np.ndarray  # the start's per-row calibrated val losses
    best: dict  # {"epoch", **val metrics} of the kept epoch (epoch 0: the start)
    weights: list | None = None  # the kept epoch's snapshot; None: the start's

    @classmethod
    def of_start(cls, evaluated: dict) -> Selection:
        start = dict(evaluated)
        rows = start.pop("rows")
        return cls(start, rows, {"epoch": 0, **start})

    @property
    def epoch(self) -> int:
        return self.best["epoch"]

    def consider(self, epoch: int, val: dict, rows: np.ndarray, snapshot) -> bool:
        """Keep epoch ``epoch`` (``snapshot()`` its weights) when it is a candidate better than the kept one."""
        better = (
            beats_start(self.start_rows, rows)
            and val["val_accuracy"] >= self.start["val_accuracy"]
            and val["val_loss"] < self.best["val_loss"]
        )
        if better:
            self.best = {"epoch": epoch, **val}
            self.weights = snapshot()
        return better


@dataclass
class EarlyStopping:
    """Counts epochs since the lowest calibrated val loss so far, the start's included, and stops after
    ``patience`` of them in a row, as Keras' EarlyStopping (fit-head's ``--patience``) does when the start is the
    first value it sees: patience 0 and 1 both stop at the first epoch without a new lowest. It counts from the
    lowest, not from the last epoch the selection would keep: a high learning rate's first epochs are above the
    start and its best come at the end of the cosine (Fashion-MNIST at lr 1e-3: epochs 1-3 above the start, every
    later epoch but one a new lowest; README)."""

    lowest: float
    patience: int
    bad: int = 0  # epochs since the lowest

    def update(self, val_loss: float) -> None:
        if val_loss < self.lowest:
            self.lowest, self.bad = val_loss, 0
        else:
            self.bad += 1

    def stops(self, epoch: int, epochs: int) -> bool:
        return self.bad >= max(1, self.patience) and epoch < epochs
