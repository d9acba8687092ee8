"""The training loop's events, and ``Callback``: the base of everything that reacts to them.

Each event method receives the learner explicitly (``def after_step(self, learn)``),
never through attribute delegation. ``order`` decides who runs first (lower first).
The events, in the order the loop fires them:

``before_fit`` > [``before_epoch`` > ``before_train`` > [``before_batch`` > ``after_loss``
> ``after_backward`` > ``after_step`` > ``after_batch``]* > ``after_train`` >
``before_validate`` > ``after_validate`` > ``after_epoch``]* > ``after_fit``

``after_step`` fires only when the optimizer really stepped (not on accumulation
micro-batches, not when a gradient scaler skipped the step). ``after_batch``,
``after_epoch`` and ``after_fit`` always fire, also after a cancellation or an error.
Raise ``CancelBatch``, ``CancelEpoch`` or ``CancelFit`` to stop cleanly.

The built-in callbacks (``Recorder``, ``ProgressBar``, ``GradientClip``, ...) are in
``onecycle.callbacks``, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onecycle.state import TrainState

__all__ = [
    "EVENTS", "Callback", "CancelBatch", "CancelEpoch", "CancelFit", "NonFiniteLossError",
    "event_table",
]  # fmt: skip

EVENTS = (
    "before_fit", "before_epoch", "before_train", "before_batch", "after_loss",
    "after_backward", "after_step", "after_batch", "after_train", "before_validate",
    "after_validate", "after_epoch", "after_fit",
)  # fmt: skip


class CancelBatch(Exception):
    """Skip the rest of this batch: no optimizer step; its gradients are discarded."""


class CancelEpoch(Exception):
    """Skip the rest of this epoch (training and validation); ``after_epoch`` still runs."""


class CancelFit(Exception):
    """Stop training now; ``after_fit`` still runs."""


class NonFiniteLossError(RuntimeError):
    """The loss (or a gradient) became NaN or infinite; training stopped before the step."""

    def __init__(self, what: str, value: float, epoch: int, step: int, lr: float) -> None:
        self.what, self.value, self.epoch, self.step, self.lr = what, value, epoch, step, lr
        super().__init__(
            f"non-finite {what} ({value}) at epoch {epoch}, optimizer step {step}, lr={lr:.4g}: "
            f"stopped before the optimizer step; weights are "
            f"{'the initial ones' if step == 0 else f'those after step {step - 1}'}. "
            "Lower lr_max, clip gradients, or check the data."
        )


class Callback:
    """Base class: every event is a no-op; override the ones you need.

    >>> class CountSteps(Callback):
    ...     def before_fit(self, learn): self.n = 0
    ...     def after_step(self, learn): self.n += 1
    """

    order: int = 50

    #: True for callbacks that change the update itself (clipping, accumulation, mixed
    #: precision): they also run during the range test and the probes of ``lr_max="auto"``,
    #: so that those sweep exactly the update rule ``fit`` trains with. Loggers,
    #: checkpoints and progress bars leave it False and never see those side runs.
    affects_update: bool = False

    def before_fit(self, learn: TrainState) -> None: ...
    def before_epoch(self, learn: TrainState) -> None: ...
    def before_train(self, learn: TrainState) -> None: ...
    def before_batch(self, learn: TrainState) -> None: ...
    def after_loss(self, learn: TrainState) -> None: ...
    def after_backward(self, learn: TrainState) -> None: ...
    def after_step(self, learn: TrainState) -> None: ...
    def after_batch(self, learn: TrainState) -> None: ...
    def after_train(self, learn: TrainState) -> None: ...
    def before_validate(self, learn: TrainState) -> None: ...
    def after_validate(self, learn: TrainState) -> None: ...
    def after_epoch(self, learn: TrainState) -> None: ...
    def after_fit(self, learn: TrainState) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def event_table(cbs: Sequence[Callback]) -> dict[str, list[Callable[[TrainState], None]]]:
    """Per event, the bound methods of the callbacks that override it, in ``order``:
    precomputed, so that an event nobody listens to costs the loop one empty loop.

    >>> class CountSteps(Callback):
    ...     def after_step(self, learn): pass
    >>> [type(f.__self__).__name__ for f in event_table([CountSteps()])["after_step"]]
    ['CountSteps']
    >>> event_table([CountSteps()])["after_loss"]  # nobody listens
    []
    """
    ordered = sorted(cbs, key=lambda c: c.order)
    return {
        name: [getattr(cb, name) for cb in ordered
               if getattr(type(cb), name) is not getattr(Callback, name)]
        for name in EVENTS
    }  # fmt: skip
