"""Loggers for the Learner: CSV files and TensorBoard, per optimizer step and per epoch.

Both record, per optimizer step, the training loss (averaged over ranks) and every
hyper-parameter the step used (``lr``, ``momentum`` or Adam's beta1, the decoupled ``wd``,
and any other scheduled key; the last param group's value), and per epoch the validation
loss and metrics. Only rank 0 writes under ``torchrun``. They never see the range test or
the probes of ``lr_max="auto"`` (side runs call only callbacks that change the update).
TensorBoard is imported when the logger starts, not with ``onecycle``.

>>> import tempfile, torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(256, 2); y = (x[:, 0] > 0).long()
>>> folder = tempfile.mkdtemp()
>>> ce = torch.nn.functional.cross_entropy
>>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 64), loss_func=ce, cbs=[CSVLogger(folder)])
>>> learn.fit_one_cycle(2, 0.1)
>>> open(f"{folder}/steps.csv").readline().strip()
'step,epoch,loss,lr,momentum,wd'
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecycle import distributed as D
from onecycle.callbacks import Callback

if TYPE_CHECKING:
    from onecycle.state import TrainState

__all__ = ["CSVLogger", "TensorBoardLogger"]


def _step_row(learn: TrainState) -> dict[str, Any]:
    step = learn.scheduler.step_count - 1 if learn.scheduler is not None else 0  # just taken
    row: dict[str, Any] = {"step": step, "epoch": learn.epoch,
                           "loss": float(learn.loss_global.detach().float())}  # fmt: skip
    for key, vals in learn.step_values.items():
        row[key] = float(vals[-1])
    if "wd" not in row and learn.opt is not None:
        row["wd"] = float(learn.opt.param_groups[-1].get("wd", 0.0))
    return row


class CSVLogger(Callback):
    """``folder/steps.csv`` (one row per optimizer step) and ``folder/epochs.csv`` (one row
    per epoch: training loss, validation loss and metrics). A new fit overwrites them, or
    appends with ``append=True`` (a resumed run: ``onecycle fit --resume --log csv``)."""

    order = 90  # after the Recorder: its epoch row is complete

    def __init__(self, folder: str | Path, append: bool = False) -> None:
        self.folder, self.append = Path(folder), append
        self._has_header = False
        self._steps: Any = None
        self._writer: csv.DictWriter | None = None

    def before_fit(self, learn: TrainState) -> None:
        if D.is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._epochs_path = self.folder / "epochs.csv"
            steps = self.folder / "steps.csv"
            keep = self.append and steps.exists() and steps.stat().st_size > 0
            if not self.append:
                self._epochs_path.unlink(missing_ok=True)
            self._steps = open(steps, "a" if keep else "w", newline="")
            self._writer = None
            self._has_header = keep

    def after_step(self, learn: TrainState) -> None:
        if self._steps is None:
            return
        row = _step_row(learn)
        if self._writer is None:
            self._writer = csv.DictWriter(self._steps, fieldnames=list(row), extrasaction="ignore")
            if not self._has_header:
                self._writer.writeheader()
        self._writer.writerow(row)

    def after_epoch(self, learn: TrainState) -> None:
        if self._steps is None or not learn.recorder.rows:
            return
        self._steps.flush()
        row = dict(learn.recorder.rows[-1])
        new = not self._epochs_path.exists()
        with open(self._epochs_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def after_fit(self, learn: TrainState) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard in ``log_dir``: ``train/loss`` and ``hp/<key>`` per optimizer
    step, ``valid/<name>`` per epoch. Needs the ``tensorboard`` package
    (``pip install onecycle[tensorboard]``)."""

    order = 90

    def __init__(self, log_dir: str | Path, append: bool = True) -> None:
        # TensorBoard writes a new event file per run and shows them as one: ``append`` is
        # accepted for symmetry with CSVLogger
        self.log_dir, self.append = Path(log_dir), append
        self.writer: Any = None

    def before_fit(self, learn: TrainState) -> None:
        if not D.is_main():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            from onecycle.errors import ConfigError

            raise ConfigError("TensorBoardLogger", "no tensorboard",
                              f"the tensorboard package installed ({e})") from None  # fmt: skip
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def after_step(self, learn: TrainState) -> None:
        if self.writer is None:
            return
        row = _step_row(learn)
        step = row.pop("step")
        self.writer.add_scalar("train/loss", row.pop("loss"), step)
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(f"hp/{key}", value, step)

    def after_epoch(self, learn: TrainState) -> None:
        if self.writer is None:
            return
        step = learn.scheduler.step_count if learn.scheduler is not None else 0
        for name, value in learn.valid_results.items():
            self.writer.add_scalar(f"valid/{name}", value, step)
        self.writer.flush()

    def after_fit(self, learn: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
