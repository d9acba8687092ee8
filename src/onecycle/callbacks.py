"""Callbacks: the built-in ones, and (re-exported from ``onecycle.events``) the loop's events
and the ``Callback`` base every callback subclasses.

- ``Recorder``: every step's hyper-parameters and loss, every epoch's row (always there);
- ``ProgressBar``: a fit's progress where a person watches (a terminal or a notebook);
- ``GradientClip``, ``GradientAccumulation``, ``MixedPrecision``: they change the update
  (``affects_update``), so the range test and the auto search run them too;
- ``NonFiniteGuard``: stops before the step a NaN or infinite loss would take.

The events, their order and what ``after_step`` means are in ``onecycle.events``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

from onecycle import distributed as D
from onecycle.errors import check_int, check_positive
from onecycle.events import (
    EVENTS,
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    NonFiniteLossError,
    event_table,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from onecycle.state import TrainState

__all__ = [
    "EVENTS",
    "Callback",
    "CancelBatch",
    "CancelEpoch",
    "CancelFit",
    "GradientAccumulation",
    "GradientClip",
    "MixedPrecision",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "ProgressBar",
    "Recorder",
    "default_callbacks",
    "event_table",
]


def default_callbacks(cbs: Sequence[Callback], progress: bool | None) -> list[Callback]:
    """What a Learner adds to its ``cbs``: a ``NonFiniteGuard`` (unless ``cbs`` has one: pass
    your own, ``check_grads=True``, to configure it) and a ``ProgressBar`` (unless ``cbs``
    has one or ``progress`` is False; ``progress=None`` shows it only where someone is
    watching)."""
    out: list[Callback] = []
    if not any(isinstance(c, NonFiniteGuard) for c in cbs):
        out.append(NonFiniteGuard())
    if progress is not False and not any(isinstance(c, ProgressBar) for c in cbs):
        out.append(ProgressBar(watched_only=progress is None))
    return out


class Recorder(Callback):
    """Records what happened: per optimizer step the scheduled hyper-parameters (the exact
    schedule values), per batch the training loss, per epoch a row of results.

    ``hypers["lr"]`` is a list with one entry per optimizer step, each a list with one
    value per param group; ``lrs`` / ``moms`` give group ``-1`` for convenience.
    ``smooth_losses`` uses a bias-corrected EMA (``beta=0.98``, as fastai).
    """

    order = 90

    def __init__(self, beta: float = 0.98) -> None:
        self.beta = beta
        self.losses: list[float] = []
        self.hypers: dict[str, list[list[float]]] = {}
        self.rows: list[dict[str, Any]] = []
        self.train_seconds: list[float] = []  # per epoch, training only (no validation)
        self._pending: list[torch.Tensor] = []
        self._resumed_start: int | None = None
        self._epoch_start = 0

    def before_fit(self, learn: TrainState) -> None:
        self.losses, self.hypers, self.rows, self.train_seconds = [], {}, [], []
        self._pending: list[torch.Tensor] = []
        self._resumed_start: int | None = None
        self._epoch_start = 0

    def before_epoch(self, learn: TrainState) -> None:
        self._t0 = time.perf_counter()
        # a resumed epoch began before the checkpoint: its row covers all its batches
        self._epoch_start = (
            self._resumed_start if self._resumed_start is not None else len(self.losses)
        )
        self._resumed_start = None

    def after_loss(self, learn: TrainState) -> None:
        # Keep tensors; convert once per epoch, so a GPU is not synchronised each batch.
        # Under DDP, the loss averaged over ranks: the same history on every rank.
        self._pending.append(learn.loss_global.detach().float())

    def after_step(self, learn: TrainState) -> None:
        for key, vals in learn.step_values.items():
            self.hypers.setdefault(key, []).append(vals)

    def _flush(self) -> None:
        if self._pending:
            self.losses.extend(torch.stack(self._pending).tolist())
            self._pending = []

    def after_train(self, learn: TrainState) -> None:
        self.train_seconds.append(time.perf_counter() - self._t0)
        self._flush()

    def after_epoch(self, learn: TrainState) -> None:
        self._flush()
        epoch_losses = self.losses[self._epoch_start :]
        row: dict[str, Any] = {
            "epoch": learn.epoch,
            "train_loss": sum(epoch_losses) / len(epoch_losses) if epoch_losses else math.nan,
        }
        row.update(learn.valid_results)
        row["seconds"] = time.perf_counter() - self._t0
        self.rows.append(row)
        # the next epoch starts here: a checkpoint written at this epoch end must not
        # resume with this epoch's losses in the next one's row
        self._epoch_start = len(self.losses)

    def after_fit(self, learn: TrainState) -> None:
        self._flush()

    def state_dict(self) -> dict[str, Any]:
        """The history so far, in plain types (goes into checkpoints)."""
        self._flush()
        return {"losses": list(self.losses), "rows": list(self.rows),
                "hypers": {k: list(v) for k, v in self.hypers.items()},  # not the live lists
                "train_seconds": list(self.train_seconds),
                "epoch_start": self._epoch_start}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the history of a checkpointed run."""
        self.losses = list(state["losses"])
        self.hypers = {k: list(v) for k, v in state["hypers"].items()}
        self.rows = list(state["rows"])
        self.train_seconds = list(state["train_seconds"])
        self._resumed_start = int(state["epoch_start"])
        self._pending = []

    def __repr__(self) -> str:
        steps = len(next(iter(self.hypers.values()), []))
        head = f"Recorder: {len(self.rows)} epochs, {steps} optimizer steps, "
        head += f"{len(self.losses)} batches"
        if not self.rows:
            return head
        row = self.rows[-1]
        cells = "  ".join(
            f"{k} {_cell(v)}" for k, v in row.items() if k not in ("epoch", "seconds")
        )
        return f"{head}\n  epoch {row['epoch']}: {cells}  ({row.get('seconds', 0):.1f}s)"

    def _repr_html_(self) -> str:
        """In a notebook: the per-epoch table."""
        import html

        if not self.rows:
            return f"<pre>{html.escape(repr(self))}</pre>"
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k, ''))}</td>" for k in keys) + "</tr>"
                       for r in self.rows)  # fmt: skip
        return f"<table><tr>{head}</tr>{body}</table>"

    @property
    def lrs(self) -> list[float]:
        """LR of the last param group at each optimizer step."""
        return [v[-1] for v in self.hypers.get("lr", [])]

    @property
    def moms(self) -> list[float]:
        """Momentum (or beta1) of the last param group at each optimizer step."""
        return [v[-1] for v in self.hypers.get("momentum", [])]

    @property
    def smooth_losses(self) -> list[float]:
        out, avg = [], 0.0
        for i, loss in enumerate(self.losses, 1):
            avg = self.beta * avg + (1 - self.beta) * loss
            out.append(avg / (1 - self.beta**i))
        return out

    def plot_loss(
        self, path: str | Path | None = None, skip_start: int = 5, *, ax: Any = None
    ) -> Figure:
        """The training loss (raw and smoothed) per batch, with validation per epoch: the
        matplotlib ``Figure``, drawn into ``ax`` if given, written to ``path`` if given."""
        from onecycle.plots import plot_losses

        return plot_losses(self, path, skip_start=skip_start, ax=ax)

    def plot_sched(self, path: str | Path | None = None, *, ax: Any = None) -> Figure:
        """Each recorded hyper-parameter over optimizer steps (one panel each; ``ax``: one
        Axes per hyper-parameter): the ``Figure``, written to ``path`` if given."""
        from onecycle.plots import plot_recorded

        return plot_recorded(self.hypers, path, ax=ax)


def _cell(v: Any) -> str:
    return str(v) if isinstance(v, (int, str)) else f"{v:.4f}"


class ProgressBar(Callback):
    """Progress where a person is watching: in a terminal a tqdm bar per epoch and the
    results table on stderr; in a Jupyter notebook a bar and the table as HTML, updated in
    place (``onecycle.progress``).

    Every Learner has one unless told otherwise (``Learner(progress=False)`` is the switch):
    that one shows progress only where someone watches (``watched_only=True``), and stays
    silent in pipes, files and CI. One made by hand always writes the table (epoch, train
    loss, valid loss, metrics, seconds) to ``stream`` (default stderr), or to the notebook;
    ``table=False`` hides it; the bar shows where stderr is a terminal or in a notebook,
    or as ``bar`` says. Under torch.distributed only rank 0 shows either. A fit given its
    own ``ProgressBar`` silences the Learner's.
    """

    order = 95

    def __init__(
        self,
        *,
        table: bool = True,
        bar: bool | None = None,
        stream: TextIO | None = None,
        watched_only: bool = False,
    ) -> None:
        self.table, self.bar, self.stream = table, bar, stream
        self.watched_only = watched_only
        self._pbar: Any = None
        self._view: Any = None

    def __repr__(self) -> str:
        return "ProgressBar(watched_only=True)" if self.watched_only else "ProgressBar()"

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def before_fit(self, learn: TrainState) -> None:
        from onecycle.progress import NotebookView, watching

        self._header_done = False
        where = watching() if self.stream is None else None
        replaced = self.watched_only and any(
            isinstance(c, ProgressBar) and c is not self for c in learn.fit_cbs
        )  # a fit's own bar speaks for it
        self._silent = not D.is_main() or replaced or (self.watched_only and where is None)
        self._view = NotebookView() if where == "notebook" and not self._silent else None
        show = self.bar if self.bar is not None else where is not None
        self._use_bar = bool(show) and not self._silent and self._view is None
        if self._use_bar:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                self._use_bar = False

    def _what(self, learn: TrainState) -> str:
        b = learn.budget  # a time budget: n_epoch is only a cap, the time left counts
        of = f"/{learn.n_epoch}" if b is None else f", {b.seconds - b.elapsed():.0f}s left"
        return f"epoch {learn.epoch + 1}{of}"

    def before_train(self, learn: TrainState) -> None:
        self._t0 = time.perf_counter()
        if self._use_bar:
            from tqdm.auto import tqdm

            self._pbar = tqdm(total=learn.n_iter, leave=False, file=sys.stderr,
                              desc=self._what(learn))  # fmt: skip

    def after_batch(self, learn: TrainState) -> None:
        if self._pbar is not None:
            self._pbar.update(1)
        elif self._view is not None:
            self._view.batch(learn.iter + 1, learn.n_iter, self._what(learn), self._t0)

    def after_train(self, learn: TrainState) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def after_epoch(self, learn: TrainState) -> None:
        if not self.table or self._silent or not learn.recorder.rows:
            return
        row = learn.recorder.rows[-1]
        if self._view is not None:
            self._view.epoch(row)
            return
        keys = list(row)
        out = self._out()
        if not self._header_done:
            out.write("  ".join(f"{k:>11}" for k in keys) + "\n")
            self._header_done = True
        cells = []
        for k in keys:
            v = row[k]
            cells.append(f"{v:>11d}" if isinstance(v, int) else f"{v:>11.4f}")
        out.write("  ".join(cells) + "\n")
        out.flush()

    def after_fit(self, learn: TrainState) -> None:
        self.after_train(learn)
        if self._view is not None:
            self._view.close()
            self._view = None


class GradientClip(Callback):
    """Clip the gradient norm to ``max_norm`` before each optimizer step."""

    affects_update = True
    order = 20

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = check_positive("max_norm", max_norm)

    def after_backward(self, learn: TrainState) -> None:
        if not learn.will_step:
            return
        if learn.scaler is not None:
            learn.scaler.unscale_(learn.opt)
        torch.nn.utils.clip_grad_norm_(learn.trainable_params(), self.max_norm)


class GradientAccumulation(Callback):
    """Accumulate gradients over ``n`` batches per optimizer step.

    The schedules count optimizer steps: an epoch of ``N`` batches has ``ceil(N / n)``
    steps (the last group of an epoch may be smaller; its loss is averaged over its
    own size). Each micro-batch's loss is divided by the group size.
    """

    affects_update = True
    order = 10

    def __init__(self, n: int = 2) -> None:
        self.n = check_int("n", n)

    def before_fit(self, learn: TrainState) -> None:
        learn.accumulate = self.n

    def after_fit(self, learn: TrainState) -> None:
        learn.accumulate = 1


class MixedPrecision(Callback):
    """Mixed precision: bf16 autocast on CPU; fp16 autocast + ``GradScaler`` on CUDA.

    A step the scaler skips (inf/NaN gradients at the current scale) does not advance
    the schedule: the learner notices the scale dropping and calls no ``after_step``.
    """

    affects_update = True
    order = 5

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        if dtype not in (None, torch.float16, torch.bfloat16):
            from onecycle.errors import ConfigError

            raise ConfigError("dtype", dtype, "torch.float16, torch.bfloat16 or None")
        self.dtype = dtype

    def before_fit(self, learn: TrainState) -> None:
        dev = learn.device.type
        dtype = self.dtype or (torch.float16 if dev == "cuda" else torch.bfloat16)
        learn.autocast = lambda: torch.autocast(dev, dtype=dtype)
        if dtype == torch.float16 and dev == "cuda":
            learn.scaler = torch.amp.GradScaler("cuda")

    def after_fit(self, learn: TrainState) -> None:
        learn.autocast = nullcontext
        learn.scaler = None


class NonFiniteGuard(Callback):
    """Stop with ``NonFiniteLossError`` when the loss (and, with ``check_grads``, the
    gradient norm) is NaN or infinite, before the optimizer step can spoil the weights.

    On by default in every ``Learner``. Costs one device synchronisation per batch.
    """

    order = 0

    def __init__(self, check_grads: bool = False) -> None:
        self.check_grads = check_grads

    def _lr(self, learn: TrainState) -> float:
        return float(learn.opt.param_groups[-1]["lr"])

    def after_loss(self, learn: TrainState) -> None:
        # under DDP the loss averaged over ranks: a NaN on any rank stops every rank
        loss = learn.loss_global.detach()
        # one scalar read: cheaper than isfinite().all() on the CPU, the same sync on a GPU
        finite = math.isfinite(loss.item()) if loss.numel() == 1 else bool(loss.isfinite().all())
        if not finite:
            raise NonFiniteLossError(
                "loss", float(loss.float().mean()), learn.epoch,
                learn.scheduler.step_count, self._lr(learn),
            )  # fmt: skip

    def after_backward(self, learn: TrainState) -> None:
        if not self.check_grads or not learn.will_step or learn.scaler is not None:
            return  # a GradScaler handles inf gradients itself by skipping the step
        grads = [p.grad for p in learn.trainable_params() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
            if not bool(torch.isfinite(norm)):
                raise NonFiniteLossError(
                    "gradient norm", float(norm), learn.epoch,
                    learn.scheduler.step_count, self._lr(learn),
                )  # fmt: skip
