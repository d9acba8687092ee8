"""Callbacks that watch a metric at each epoch end: ``EarlyStopping`` ends the fit when it
stops improving, ``SaveBest`` keeps the weights of its best epoch (and puts them back at
the end of the fit).

The metric is a column of the Recorder's epoch row: ``valid_loss``, ``train_loss`` or a
metric's name (``accuracy``). ``mode="auto"`` minimises names with ``loss`` or ``error``
in them and maximises the others. Both are resumable: their state (best value, epochs
without improvement, the best weights) goes into the checkpoints a ``Checkpoint`` writes
and comes back on ``resume``, so an interrupted run stops, or restores, as the whole
run would have.

>>> import torch
>>> from onecycle import Learner, accuracy
>>> from onecycle.data import Loader
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(256, 2, generator=g); y = (x[:, 0] > 0).long()
>>> _ = torch.manual_seed(0)  # the model's initial weights
>>> stop = EarlyStopping("valid_loss", patience=1, min_delta=0.5)  # asks a lot
>>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 32), Loader(x, y, 128),
...                 loss_func=torch.nn.functional.cross_entropy, metrics=[accuracy],
...                 cbs=[stop, SaveBest("accuracy")])
>>> learn.fit_one_cycle(10, 0.1)
>>> len(learn.recorder.rows), stop.stopped_epoch  # epoch 2 not 0.5 better than 1: stop
(3, 2)
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Literal

import torch

from onecycle.callbacks import Callback, CancelFit
from onecycle.errors import ConfigError, check_finite, check_int

if TYPE_CHECKING:
    from onecycle.state import TrainState

__all__ = ["EarlyStopping", "SaveBest"]

log = logging.getLogger(__name__)

Mode = Literal["auto", "min", "max"]


class _Watch(Callback):
    """Reads ``monitor`` from each epoch's row (after the Recorder wrote it, before a
    ``Checkpoint`` saves this callback's state) and says whether it improved."""

    order = 92  # after the Recorder (90); before ProgressBar (95) and Checkpoint (97)

    def __init__(self, monitor: str, mode: Mode, min_delta: float) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError("monitor", monitor, "a column of the epoch row, e.g. 'valid_loss'")
        if mode not in ("auto", "min", "max"):
            raise ConfigError("mode", mode, "'auto', 'min' or 'max'")
        self.monitor = monitor
        lower = any(w in monitor for w in ("loss", "error"))
        self.mode = mode if mode != "auto" else ("min" if lower else "max")
        self.min_delta = check_finite("min_delta", min_delta)
        if self.min_delta < 0:
            raise ConfigError("min_delta", min_delta, "a number >= 0")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None

    def before_fit(self, learn: TrainState) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None

    def _improved(self, learn: TrainState) -> bool | None:
        """Did this epoch beat the best by ``min_delta``? None: not a completed epoch."""
        if not learn.epoch_completed or not learn.recorder.rows:
            return None
        row = learn.recorder.rows[-1]
        if self.monitor not in row:
            raise ConfigError("monitor", self.monitor, f"a column of the epoch row: one of "
                              f"{[k for k in row if k != 'epoch']}")  # fmt: skip
        value = float(row[self.monitor])
        if self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch = value, learn.epoch
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]


class EarlyStopping(_Watch):
    """End the fit when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs in a row (the epoch that decides is recorded and checkpointed;
    the fit ends before the next one starts).

    Args:
        monitor: a column of the epoch row (``valid_loss``, ``accuracy``, ``train_loss``).
        patience: epochs without improvement to tolerate, >= 1.
        min_delta: how much better than the best counts as an improvement, >= 0.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (min for losses and errors).

    ``stopped_epoch`` is the epoch after which it stopped (None if it did not). A 1cycle
    stopped early ends before its LR annealed: the weights are those of a high LR; pair it
    with ``SaveBest`` to get the best epoch's weights back.
    """

    def __init__(
        self,
        monitor: str = "valid_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: Mode = "auto",
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = check_int("patience", patience)
        self.wait = 0
        self.stopped_epoch: int | None = None

    def before_fit(self, learn: TrainState) -> None:
        super().before_fit(learn)
        self.wait, self.stopped_epoch = 0, None

    def before_epoch(self, learn: TrainState) -> None:
        if self.wait >= self.patience:  # decided at the last epoch end (or before a resume)
            self.stopped_epoch = learn.epoch - 1
            log.info("early stopping after epoch %d: %s has not improved by more than %g "
                     "for %d epochs (best %.4g at epoch %s)", learn.epoch - 1, self.monitor,
                     self.min_delta, self.wait, self.best, self.best_epoch)  # fmt: skip
            raise CancelFit

    def after_epoch(self, learn: TrainState) -> None:
        better = self._improved(learn)
        if better is not None:
            self.wait = 0 if better else self.wait + 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.wait = int(state["wait"])

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta:g}, mode={self.mode!r})")  # fmt: skip


class SaveBest(_Watch):
    """Keep a copy of the weights of the epoch with the best ``monitor`` (on the CPU),
    and with ``restore=True`` (the default) put them back into the model when the fit
    ends, also when it ends early or with an error.

    ``best_state`` is that copy (a state dict), ``best_epoch`` and ``best`` its epoch and
    value; save it with ``learn.save(path)`` after the fit. Under a process group, every
    rank keeps the same copy (the weights are the same on every rank).
    """

    def __init__(
        self,
        monitor: str = "valid_loss",
        mode: Mode = "auto",
        min_delta: float = 0.0,
        restore: bool = True,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.restore = bool(restore)
        self.best_state: dict[str, torch.Tensor] | None = None

    def before_fit(self, learn: TrainState) -> None:
        super().before_fit(learn)
        self.best_state = None

    def after_epoch(self, learn: TrainState) -> None:
        if self._improved(learn):
            self.best_state = {k: v.detach().cpu().clone()
                               for k, v in learn.model.state_dict().items()}  # fmt: skip

    def after_fit(self, learn: TrainState) -> None:
        if self.restore and self.best_state is not None:
            with torch.no_grad():
                learn.model.load_state_dict(self.best_state)
            log.info("restored the weights of epoch %s (%s %.4g)", self.best_epoch,
                     self.monitor, self.best)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "weights": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_state = state["weights"]

    def __repr__(self) -> str:
        return (f"SaveBest(monitor={self.monitor!r}, mode={self.mode!r}, "
                f"restore={self.restore})")  # fmt: skip
