"""``ScheduleLR``: a onecycle schedule behind PyTorch's ``LRScheduler`` interface.

``ScheduleLR`` wraps a ``Scheduler`` for plain loops, Lightning, Hugging Face and timm,
with the guards that keep it from going silently wrong (stepped per epoch, a chained
scheduler, a run that stopped short). The ``Scheduler`` itself, which sets each scheduled
hyper-parameter in ``optimizer.param_groups`` once per optimizer step, is in
``onecycle.hyperparams``; this module re-exports it and ``momentum_key``, so
``from onecycle.scheduler import Scheduler`` keeps working.
"""

from __future__ import annotations

import itertools
import logging
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from onecycle.errors import ConfigError, ScheduleWarning, check_int
from onecycle.hyperparams import (
    NewGroups,
    Scheduler,
    ScheduleSpec,
    _describe,
    _picture,
    momentum_key,
)

__all__ = ["ScheduleLR", "Scheduler", "momentum_key"]

log = logging.getLogger(__name__)


class ScheduleLR(LRScheduler):
    """A onecycle schedule behind PyTorch's ``LRScheduler`` interface.

    Drop-in for ``OneCycleLR``/``CyclicLR`` in a plain loop, Lightning
    (``{"scheduler": s, "interval": "step"}``) or Hugging Face: call ``step()``
    after each ``optimizer.step()``. Non-LR keys (momentum, weight decay) are
    driven too; ``get_last_values()`` returns them all. ``state_dict()`` is
    ``{"last_epoch": n, "_step_count": k}`` and loads with
    ``torch.load(weights_only=True)``; loading sets the values at once, so the first
    resumed step is right whatever the load order.

    It cannot go silently wrong (each case warns once with a ``ScheduleWarning``, or
    raises):

    - it counts the optimizer's real steps (a step hook) and warns when it is stepped
      less or more often than the optimizer: per epoch instead of per step (Lightning's
      default ``interval="epoch"``), or twice per step;
    - a scheduled value changed by another scheduler (``ReduceLROnPlateau``,
      ``ChainedScheduler``) is reported, since the next step overwrites it;
    - a param group added later raises unless ``new_groups="follow"`` (see ``Scheduler``);
    - when it is garbage-collected (at the latest when the process exits) having been
      stepped but stopped short of ``total_steps``, it warns: the LR never annealed, as
      when ``total_steps`` was counted before ``torchrun`` split the data;
    - timm's protocol: ``step_update(num_updates)`` after each update drives it, and then
      timm's per-epoch ``step(epoch)`` is a no-op; ``step(epoch)`` without
      ``step_update`` is refused (torch's deprecated epoch argument would rewind it).

    >>> import torch
    >>> from onecycle.schedules import one_cycle
    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    >>> sched = ScheduleLR(opt, {"lr": one_cycle(1.0, pct_start=0.5)}, total_steps=5)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(round(sched.get_last_lr()[0], 4))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.04, 0.52, 1.0, 0.5, 0.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedules: Mapping[str, ScheduleSpec] | Callable[[int], Mapping[str, ScheduleSpec]],
        total_steps: int,
        last_epoch: int = -1,
        *,
        new_groups: NewGroups = "error",
    ) -> None:
        # a fixed mapping, or a function of the step count (CLR's cycles are in steps)
        self._plan = _plan(schedules)
        self._new_groups = new_groups
        self.core = Scheduler(optimizer, self._plan(total_steps), total_steps,
                              new_groups=new_groups)  # fmt: skip
        self._opt_steps = 0  # optimizer.step() calls seen by the hook
        self._offset = 0  # schedule position minus optimizer steps when the position was set
        self._timm = False  # driven by step_update (timm's protocol)
        self._warned_pace = False
        ref = weakref.ref(self)

        def count(opt: Optimizer, args: Any, kwargs: Any) -> None:
            me = ref()
            if me is not None:
                me._opt_steps += 1

        self._hook = optimizer.register_step_post_hook(count)
        self._box = [self.core]  # the finalizer's view: load_state_dict may replace the core
        # a newer ScheduleLR over parameters of the same shapes supersedes this one: a
        # notebook cell run again, not a run that stopped short (see _check_finished)
        shapes = tuple(tuple(p.shape) for g in optimizer.param_groups for p in g["params"])
        serial = _NEWEST[shapes] = next(_SERIALS)
        weakref.finalize(self, _check_finished, self._box, self._hook, shapes, serial)
        super().__init__(optimizer, last_epoch)

    def __repr__(self) -> str:
        return _describe(self.core, "ScheduleLR")

    def _repr_html_(self) -> str:
        return _picture(self.core, repr(self))

    def step(self, epoch: int | None = None, metric: Any = None) -> None:  # type: ignore[override]
        """Advance one optimizer step (call it after each ``optimizer.step()``).

        ``epoch``: only for timm, whose training script calls ``step(epoch, metric)`` at
        each epoch end: a no-op once ``step_update`` drives the schedule, else refused.
        """
        if epoch is not None:
            if self._timm:
                return
            raise ConfigError(
                "epoch", epoch,
                "no argument: ScheduleLR counts optimizer steps; call step() after every "
                "optimizer.step() (timm: call step_update(num_updates) per update, and "
                "step(epoch) is then ignored)",
            )  # fmt: skip
        if self.last_epoch >= 0:
            self.core.check_untouched()
        super().step()
        self._check_pace()

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """timm's per-update call: jump to step ``num_updates`` (the updates done so far)."""
        num_updates = check_int("num_updates", num_updates, minimum=0)
        if not self._timm or self._opt_steps == 0:  # timm sets the position on (re)start
            self._offset = num_updates - self._opt_steps
        self._timm = True
        self.core.check_untouched()
        self.core._note_past_end(num_updates)
        self.last_epoch = num_updates
        self.core.load_state_dict({"step": num_updates})
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
        self._check_pace()

    def _check_pace(self) -> None:
        if self._warned_pace:
            return
        expected = self._opt_steps + self._offset
        gap = self.last_epoch - expected
        if abs(gap) >= max(4, 0.01 * self.core.total_steps):
            self._warned_pace = True
            how = ("less often than the optimizer: stepped per epoch? In Lightning return "
                   '{"scheduler": s, "interval": "step"}') if gap < 0 else (
                   "more often than the optimizer: twice per step, or while a GradScaler "
                   "skips steps")  # fmt: skip
            warnings.warn(
                f"ScheduleLR is at step {self.last_epoch} but the optimizer took "
                f"{expected} steps: it is being stepped {how}. Call sched.step() once "
                "after every optimizer.step(); the schedule (total_steps="
                f"{self.core.total_steps}) is counted in optimizer steps.",
                ScheduleWarning, stacklevel=3,
            )  # fmt: skip

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # LRScheduler.step() has already advanced last_epoch; set every key, return the LRs.
        self.core._note_past_end(self.last_epoch)
        self.core.load_state_dict({"step": max(self.last_epoch, 0)})
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def extend(self, new_total: int, at: int | None = None) -> None:
        """Lengthen the run to ``new_total`` optimizer steps without restarting the warm-up
        (``Scheduler.extend``; for a resumed run, after ``load_state_dict``)."""
        self.core.extend(new_total, at)
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_last_values(self) -> dict[str, list[float]]:
        """Every scheduled hyper-parameter's current value, per param group
        (``{"lr": [...], "momentum": [...]}``; momentum is beta1 for Adam-style optimizers)."""
        return {k: list(v) for k, v in self.core.applied.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count,
                "total_steps": self.core.total_steps}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue a saved run. Saved by a run planned for fewer steps (the same command
        with more epochs), the run is extended from the saved step (``extend``: the warm-up
        is not restarted; logged); planned for more steps, it is refused."""
        self.last_epoch = check_int("last_epoch", state_dict["last_epoch"], minimum=0)
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        planned, now = state_dict.get("total_steps"), self.core.total_steps
        if planned is not None and int(planned) != now:
            planned = check_int("state['total_steps']", planned)
            if planned > now:
                raise ConfigError(
                    "total_steps", now,
                    f">= {planned}: the saved run was planned for {planned} steps; a shorter "
                    "plan would jump its schedule",
                )  # fmt: skip
            self.core = self._box[0] = Scheduler(self.optimizer, self._plan(planned), planned,
                                                 new_groups=self._new_groups)  # fmt: skip
            self.core.load_state_dict({"step": self.last_epoch})
            self.core.extend(now, at=self.last_epoch)
            log.info("ScheduleLR: the saved run was planned for %d steps; extended to %d from "
                     "step %d (warm-up not restarted)", planned, now, self.last_epoch)  # fmt: skip
        self.core.load_state_dict({"step": self.last_epoch})
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
        self._offset = self.last_epoch - self._opt_steps


def _plan(
    schedules: Mapping[str, ScheduleSpec] | Callable[[int], Mapping[str, ScheduleSpec]],
) -> Callable[[int], Mapping[str, ScheduleSpec]]:
    """``ScheduleLR``'s schedules as a function of the step count, checked when called: a
    bare schedule (``one_cycle(0.1)``, a function of progress) is not a plan."""
    if isinstance(schedules, Mapping) or not callable(schedules):
        return lambda _: schedules  # type: ignore[return-value]  # Scheduler checks it

    def plan(total_steps: int) -> Mapping[str, ScheduleSpec]:
        spec = schedules(total_steps)
        if not isinstance(spec, Mapping):
            raise ConfigError(
                "schedules", schedules,
                "a mapping {hyper: schedule}, e.g. {'lr': one_cycle(0.1)}, or a function "
                f"total_steps -> such a mapping (called with {total_steps} it gave "
                f"{spec!r})",
            )  # fmt: skip
        return spec

    return plan


# Each ScheduleLR's serial number, and the newest one's per parameter shapes.
_SERIALS = itertools.count()
_NEWEST: dict[tuple[tuple[int, ...], ...], int] = {}


def _check_finished(
    box: list[Scheduler], hook: Any, shapes: tuple[tuple[int, ...], ...], serial: int
) -> None:
    """At collection or exit: a schedule stepped but stopped far short of its end. Not
    when a newer ScheduleLR over parameters of the same shapes was made since: this one
    was replaced (a notebook cell run again, a new attempt), not left unfinished."""
    hook.remove()
    core = box[0]
    if core.step_count == 0:
        return
    if _NEWEST.get(shapes, serial) > serial:
        log.debug("a ScheduleLR stopped at step %d of %d was replaced by a newer one",
                  core.step_count, core.total_steps)  # fmt: skip
        return
    if core.step_count < 0.99 * (core.total_steps - 1):
        log.warning(
            "ScheduleLR stopped at step %d of total_steps=%d (%.0f%%): the schedule did not "
            "finish (a 1cycle's LR never annealed). If training ended here, total_steps was "
            "too large: count optimizer steps per process under torchrun/DDP, after "
            "gradient accumulation (onecycle.integrations compute it from the trainer).",
            core.step_count, core.total_steps, 100 * core.step_count / core.total_steps,
        )  # fmt: skip
