"""Time-budgeted training: a fit that ends after a wall-clock time, its schedule annealed.

``learn.fit_one_cycle(100, 0.1, budget="3min")`` (``onecycle fit --budget 3m``) runs the
1cycle over time instead of steps. The progress of each optimizer step is the steps done
over the steps the run is predicted to take, predicted again after every step from the
time left and the pace measured so far. ``TimeBudget`` is that prediction; the Learner
asks it after each optimizer step for the next step's progress and stops after the step
it calls the last. ``n_epoch`` is then an upper bound: whichever ends first, the time or
the epochs, ends the run, and its last step has progress 1 (the schedule's end value).

What is counted: the whole fit's wall time on ``Learner.clock`` (``time.monotonic`` unless
replaced, e.g. by a fake clock in tests), from the call to ``fit`` to its end: steps,
validation, checkpoints, callbacks. Not counted: what runs before or after the fit (the
command line's final test evaluation and plots), and the time between an interruption
and its resume. A checkpoint records the time used, and a resume continues from it.

The prediction after optimizer step ``k - 1``, at elapsed time ``E`` of budget ``B``:

- ``r``: the mean wall time of a step, over every step so far that did not cross an epoch
  end. A whole-run mean: smooth, so the LR curve keeps its shape. A mean over the last
  ``W`` steps moves the predicted length by about ``remaining x noise / W`` steps at every
  step, which makes the schedule stall and jump;
- ``o``: the extra time of the last epoch end crossed (validation, the epoch-end
  checkpoint, the next epoch's start);
- ``n``, the steps that still fit, the next one included: the most steps whose time,
  ``n x r`` plus ``o`` for each epoch end still to come (the rest of this epoch, whole
  epochs, then a last one cut short, each ending with its validation) is at most
  ``B - E``;
- step ``k`` is the last when ``n < 2`` (after it there would be no time for another) or
  when it is the last step ``n_epoch`` allows: progress 1. Otherwise progress
  ``k / (k + n - 1)``, never less than the previous step's (a faster pace must not rewind
  the schedule) nor than ``k / (max_steps - 1)`` (the epochs' own pace).

A run of a budget takes at least two steps (the first at progress 0, the last at 1).

>>> now = [0.0]
>>> b = TimeBudget(10, max_steps=1000, steps_per_epoch=100, clock=lambda: now[0])
>>> ts = [0.0]  # step 0 starts at progress 0
>>> while True:  # each optimizer step takes 1 s
...     now[0] += 1.0
...     t = b.next_progress(len(ts), epoch=0, in_epoch=len(ts))
...     if b.done:
...         break
...     ts.append(t)
>>> [round(t, 3) for t in ts]
[0.0, 0.111, 0.222, 0.333, 0.444, 0.556, 0.667, 0.778, 0.889, 1.0]
>>> b.elapsed(), b.ended_by  # 10 steps, on time, the last at progress 1
(10.0, 'budget')
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import time
from collections.abc import Callable
from typing import Any

from onecycle.errors import ConfigError, check_int

__all__ = ["TimeBudget", "parse_budget"]

log = logging.getLogger(__name__)

_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")
_ALLOWED = "seconds > 0, or a duration such as '90s', '3m', '3min', '1.5h'"


def parse_budget(value: float | int | str) -> float:
    """Seconds in a time budget: a number of seconds, or a number with a unit (``s``,
    ``m``/``min``, ``h``/``hr``; also spelled out). Raises ``ConfigError`` naming
    ``budget`` for anything else, zero, or a negative or infinite time.

    >>> parse_budget("90s"), parse_budget("3m"), parse_budget("3min"), parse_budget("1.5h")
    (90.0, 180.0, 180.0, 5400.0)
    >>> parse_budget(45), parse_budget("2.5")
    (45.0, 2.5)
    >>> parse_budget("3 weeks")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    onecycle.errors.ConfigError: budget='3 weeks' is invalid: expected seconds > 0, or a ...
    """
    if isinstance(value, str):
        m = _DURATION.match(value.lower())
        if m is None or m[2] not in _UNITS:
            raise ConfigError("budget", value, _ALLOWED)
        seconds = float(m[1]) * _UNITS[m[2]]
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError("budget", value, _ALLOWED)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError("budget", value, _ALLOWED)
    return seconds


def check_fit(budget: Any, *, schedules: Any, start_epoch: int, extend: bool,
              total_steps: int | None) -> float | None:  # fmt: skip
    """``fit``'s ``budget`` in seconds (None without one), refused with what it cannot
    drive: schedules built from the step count (CLR's cycles are counted in steps), a
    run started at ``start_epoch``, ``extend`` (a budget is lengthened by a larger
    budget, not by epochs), or a side run of a fixed number of steps."""
    if budget is None:
        return None
    seconds = parse_budget(budget)
    if callable(schedules):
        raise ConfigError("schedules", "a function of the step count", "schedules of progress "
                          "(a mapping) with a budget: a time budget knows the step count only "
                          "at its end (CLR's cycles are counted in steps)")  # fmt: skip
    if start_epoch:
        raise ConfigError("start_epoch", start_epoch, "0 with a budget (resume continues a "
                          "budgeted run where it stopped)")  # fmt: skip
    if extend:
        raise ConfigError("extend", extend, "False with a budget (a budgeted run cannot be "
                          "lengthened; resume it with the same budget)")  # fmt: skip
    if total_steps is not None:
        raise ConfigError("budget", budget, "None for a run of a fixed number of steps")
    return seconds


class TimeBudget:
    """The pace of a fit that must end ``seconds`` after it started: after each optimizer
    step, the next step's progress in [0, 1] and whether it is the last.

    Args:
        seconds: the budget (anything ``parse_budget`` reads).
        max_steps: the optimizer steps ``n_epoch`` allows: the run ends there if the time
            has not ended it first.
        steps_per_epoch: optimizer steps in one epoch (epoch-end time is spread over them).
        clock: seconds, monotonic (``time.monotonic``); a fake one makes runs reproducible.
        start: the clock's reading when the fit began (default: now).
        agree: under several processes, the one value every rank uses for its elapsed
            time (the Learner passes the mean over ranks), so that all ranks stop at the
            same step. None: the process's own.

    ``state_dict()`` holds the time used and the pace measured, in plain types (it goes
    into checkpoints); ``load_state_dict`` continues from them. ``done`` turns True after
    the last step; ``ended_by`` says why: ``"budget"`` or ``"epochs"``.
    """

    def __init__(
        self,
        seconds: float | str,
        *,
        max_steps: int,
        steps_per_epoch: int,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        agree: Callable[[float], float] | None = None,
    ) -> None:
        self.seconds = parse_budget(seconds)
        self.max_steps = check_int("max_steps", max_steps)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch)
        self.clock, self.agree = clock, agree
        self._start = float(clock()) if start is None else float(start)
        self._offset = 0.0  # time used before this process took over (resume)
        self._last_at = 0.0  # elapsed time at the end of the last step (0: the fit's start)
        self._step_sum, self._steps_timed = 0.0, 0
        self.overhead = 0.0  # the last epoch end's extra time
        self._epoch = -1  # the epoch of the last step (-1: none yet)
        self.t = 0.0  # the progress given to the next step
        self.last = False  # the next step is the last
        self.done = False  # the last step was taken
        self.ended_by = ""
        self.steps = 0  # optimizer steps when the fit ended (``finish``)
        self.used: float | None = None  # the fit's time, measured when it ended

    def elapsed(self) -> float:
        """Seconds of the budget used so far (this process's clock, resumes included)."""
        return self._offset + float(self.clock()) - self._start

    def _now(self) -> float:
        """Elapsed time as every rank sees it (``agree``)."""
        now = self.elapsed()
        return self.agree(now) if self.agree is not None else now

    @property
    def step_seconds(self) -> float:
        """The mean time of a step so far (steps that crossed an epoch end left out)."""
        return self._step_sum / self._steps_timed if self._steps_timed else 0.0

    def steps_left(self, elapsed: float, in_epoch: int) -> float:
        """Optimizer steps that still fit in the budget at ``elapsed``, the next one
        included, when ``in_epoch`` steps of this epoch are done: each epoch end to come,
        the last one's included, costs ``overhead``. ``inf`` while no time is measured."""
        r, o, spe = self.step_seconds, self.overhead, self.steps_per_epoch
        if r <= 0:
            return math.inf
        left = self.seconds - elapsed
        here = spe - min(in_epoch, spe)  # steps left in this epoch
        if left - o <= here * r:  # the run ends in this epoch
            return (left - o) / r
        left -= here * r + o  # this epoch and its end
        full = math.floor(left / (spe * r + o))  # whole epochs, each with its end
        left -= full * (spe * r + o)
        return here + full * spe + max(0.0, (left - o) / r)  # and one cut short

    def next_progress(self, step: int, epoch: int, in_epoch: int) -> float:
        """Call after each optimizer step: ``step`` steps are done, the last of them in
        ``epoch``, which has ``in_epoch`` steps done. Returns the progress of the next
        step (step index ``step``)."""
        now = self._now()
        interval, self._last_at = now - self._last_at, now
        if self._epoch >= 0 and epoch != self._epoch and self._steps_timed:
            self.overhead = max(0.0, interval - self.step_seconds)  # crossed an epoch end
        else:
            self._step_sum += interval
            self._steps_timed += 1
        self._epoch = epoch
        if self.last:
            self.done = True
            return self.t
        if step >= self.max_steps - 1:
            self.last, self.ended_by, self.t = True, "epochs", 1.0
        elif (n := self.steps_left(now, in_epoch)) < 2:
            self.last, self.ended_by, self.t = True, "budget", 1.0
        else:
            self.t = min(1.0, max(self.t, step / (step + n - 1), step / (self.max_steps - 1)))
        return self.t

    def finish(self, steps: int, agree: bool = False) -> None:
        """The fit ended after ``steps`` optimizer steps: note its time (``agree``: the
        time every rank uses, a collective; else this process's) and say so, with a
        warning when it ran over by more than a step."""
        self.steps, self.used = int(steps), self._now() if agree else self.elapsed()
        over = self.used - self.seconds
        why = {"budget": "the time", "epochs": "n_epoch (before the time)"}.get(
            self.ended_by, "something else: cancelled, interrupted or an error")  # fmt: skip
        log.info("time budget %gs: %d optimizer steps in %.1fs, ended by %s",
                 self.seconds, self.steps, self.used, why)  # fmt: skip
        if self.done and over > max(self.step_seconds, 0.01 * self.seconds):
            log.warning(
                "time budget %gs: the fit took %.1fs, %.1fs over: the steps or the epoch "
                "ends took longer than measured before (the first epoch's validation is "
                "not known until it has run once)", self.seconds, self.used, over,
            )  # fmt: skip

    def report(self) -> dict[str, Any]:
        """What the budget did, for ``metrics.json``: ``seconds`` (the budget),
        ``elapsed`` (the fit's time), ``optimizer_steps``, ``ended_by``, and the pace
        measured (``step_seconds``, ``epoch_end_seconds``)."""
        return {
            "seconds": self.seconds, "elapsed": self.used if self.used is not None
            else self.elapsed(), "optimizer_steps": self.steps, "ended_by": self.ended_by,
            "step_seconds": self.step_seconds, "epoch_end_seconds": self.overhead,
        }  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The time used and the pace so far, in plain types (goes into checkpoints)."""
        return {
            "seconds": self.seconds, "elapsed": self._now(), "last_at": self._last_at,
            "step_sum": self._step_sum, "steps_timed": self._steps_timed,
            "overhead": self.overhead, "epoch": self._epoch, "t": self.t, "last": self.last,
            "done": self.done, "ended_by": self.ended_by,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpointed run: its time used counts, the clock goes on from there
        (this process's time since its fit began included)."""
        if float(state["seconds"]) != self.seconds:
            raise ConfigError("budget", self.seconds, f"{float(state['seconds']):g} seconds, "
                              "the budget of the run being resumed")  # fmt: skip
        self._offset = float(state["elapsed"])
        self._last_at = float(state["last_at"])
        self._step_sum, self._steps_timed = float(state["step_sum"]), int(state["steps_timed"])
        self.overhead, self._epoch = float(state["overhead"]), int(state["epoch"])
        self.t, self.last, self.done = float(state["t"]), bool(state["last"]), bool(state["done"])
        self.ended_by = str(state["ended_by"])
