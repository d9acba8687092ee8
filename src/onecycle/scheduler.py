"""Drive any ``torch.optim`` optimizer's hyper-parameters from schedules.

``Scheduler`` sets each scheduled hyper-parameter in ``optimizer.param_groups``
once per optimizer step. Its only state is the step count: resume is "rebuild
from the same config, load ``{"step": n}``". ``ScheduleLR`` wraps it in
PyTorch's ``LRScheduler`` interface for plain loops, Lightning and HF users.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from onecycle.errors import ConfigError, ScheduleWarning, check_int, check_range
from onecycle.schedules import Const, Schedule, progress

__all__ = ["ScheduleLR", "Scheduler", "momentum_key"]

log = logging.getLogger(__name__)

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)

ScheduleSpec = Schedule | Sequence[Schedule]

# the values a schedule may give these keys: a negative LR or a momentum of 1.5 is refused
_ALLOWED = {
    "lr": (0.0, math.inf, "finite float32 values >= 0"),
    "momentum": (0.0, 1.0, "values in [0, 1]"),
    "weight_decay": (0.0, math.inf, "finite float32 values >= 0"),
    "wd": (0.0, math.inf, "finite float32 values >= 0"),
}


def momentum_key(optimizer: Optimizer) -> str | None:
    """Which param-group key holds momentum: ``"momentum"`` (SGD, RMSprop), ``"betas"``
    (Adam, AdamW, NAdam, RAdam, ...: momentum is ``betas[0]``), or None if neither.

    >>> momentum_key(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]))
    'betas'
    """
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return "momentum"
    if "betas" in group:
        return "betas"
    return None


NewGroups = Literal["error", "follow"]


def _get(group: dict[str, Any], key: str) -> float:
    if key == "momentum" and "momentum" not in group:
        return float(group["betas"][0])
    return float(group[key])


def _set(group: dict[str, Any], key: str, value: float) -> None:
    if key == "momentum" and "momentum" not in group:
        # Adam-style: momentum is beta1; every other beta (beta2, Adan's beta3) stays.
        group["betas"] = (value, *tuple(group["betas"])[1:])
    elif isinstance(group.get(key), torch.Tensor):
        group[key].fill_(value)  # tensor LRs (capturable/fused optimizers) keep their identity
    else:
        group[key] = value


def _constant(spec: Any) -> Any:
    """A number given for a schedule: the constant schedule of that value."""
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return Const(float(spec))  # refuses NaN and inf, naming "value"
    return spec


@dataclass(frozen=True)
class Follow:
    """The schedule of a param group added after the scheduler was built
    (``new_groups="follow"``): group 0's schedule times ``factor``, the new group's value
    over group 0's when it appeared (1 for momentum, which follows group 0 exactly)."""

    base: Schedule
    factor: float

    def __call__(self, t: float) -> float:
        return self.factor * self.base(t)


class Scheduler:
    """Apply ``{hyper: schedule}`` to an optimizer's param groups, once per optimizer step.

    Args:
        optimizer: any ``torch.optim.Optimizer``; only its ``param_groups`` are touched.
        schedules: ``{key: schedule}`` or ``{key: [schedule per param group]}``; a number
            is a constant (``{"lr": 0.1}`` is ``{"lr": const(0.1)}``). Keys are
            ``"lr"``, ``"momentum"`` (SGD/RMSprop ``momentum`` or Adam-style ``betas[0]``),
            ``"weight_decay"``, or any other key the param groups already have.
        total_steps: number of optimizer steps in the run, >= 1. Step ``i`` uses progress
            ``i / (total_steps - 1)``: the first step gets each schedule's start value,
            the last step its end value.
        new_groups: what to do with a param group added after construction
            (``optimizer.add_param_group``, e.g. Lightning's ``BackboneFinetuning``):
            ``"error"`` (default) raises ``ConfigError`` at the next step; ``"follow"``
            schedules it like group 0, scaled by the ratio of its value to group 0's when
            it appeared (momentum: group 0's exactly). A removed group always raises.

    The values for step 0 are set at construction (``applied`` holds what was last set).
    Call ``step()`` after each ``optimizer.step()``; ``step(t)`` sets the next step's values
    at progress ``t`` instead, for a run whose length is time, not steps
    (``onecycle.budget``: the state is then ``{"step": n, "t": t}``). Past ``total_steps``
    the final values are held (logged once), never extrapolated and never an error. A
    scheduled value changed by someone else between two steps (``ReduceLROnPlateau``, a
    second scheduler) is overwritten by the next step: that warns once (``ScheduleWarning``).

    >>> import torch
    >>> from onecycle.schedules import one_cycle, one_cycle_moms
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> sched = Scheduler(opt, {"lr": one_cycle(0.5), "momentum": one_cycle_moms()}, 100)
    >>> opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]
    (0.02, 0.95)
    >>> for _ in range(99):
    ...     opt.step()
    ...     sched.step()
    >>> opt.param_groups[0]["lr"], sched.state_dict()
    (5e-06, {'step': 99})
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedules: Mapping[str, ScheduleSpec],
        total_steps: int,
        *,
        new_groups: NewGroups = "error",
    ) -> None:
        if new_groups not in ("error", "follow"):
            raise ConfigError("new_groups", new_groups, "'error' or 'follow'")
        self.new_groups = new_groups
        if not isinstance(optimizer, Optimizer):
            raise ConfigError("optimizer", type(optimizer).__name__, "a torch.optim.Optimizer")
        self.optimizer = optimizer
        self.total_steps = check_int("total_steps", total_steps)
        if not isinstance(schedules, Mapping) or not schedules:
            raise ConfigError("schedules", schedules, "a non-empty mapping {hyper: schedule}")
        n_groups = len(optimizer.param_groups)
        self.schedules: dict[str, tuple[Schedule, ...]] = {}
        for key, spec in schedules.items():
            self._check_key(key)
            per_group = tuple(spec) if isinstance(spec, Sequence) else (spec,) * n_groups
            per_group = tuple(_constant(s) for s in per_group)  # {"lr": 0.1}: a constant
            if len(per_group) != n_groups:
                raise ConfigError(
                    f"schedules[{key!r}]",
                    f"{len(per_group)} schedules",
                    f"one schedule, or one per param group ({n_groups})",
                )
            if not all(callable(s) for s in per_group):
                raise ConfigError(f"schedules[{key!r}]", spec, "schedule(s): callables of progress")
            self.schedules[key] = per_group
        self._step = 0
        self._t: float | None = None  # progress given by step(t) (a time budget), else None
        self._warned_past_end = self._warned_outside = False
        for i in range(0, self.total_steps, max(1, self.total_steps // 1000)):
            self.values_at(i)  # refuse a bad schedule now, not hours into training
        self._apply()

    def _check_key(self, key: str) -> None:
        groups = self.optimizer.param_groups
        if key == "momentum":
            if momentum_key(self.optimizer) is None:
                raise ConfigError(
                    "schedules['momentum']",
                    type(self.optimizer).__name__,
                    "an optimizer with 'momentum' (SGD, RMSprop) or 'betas' (Adam family)",
                )
            return
        if not all(key in g for g in groups):
            allowed = sorted(k for k in groups[0] if k != "params")
            raise ConfigError("schedules", key, f"a param-group key, one of {allowed}")
        if not isinstance(groups[0][key], (int, float, torch.Tensor)) or isinstance(
            groups[0][key], bool
        ):
            raise ConfigError("schedules", key, "a numeric param-group key")

    def __repr__(self) -> str:
        return _describe(self, "Scheduler")

    def _repr_html_(self) -> str:
        return _picture(self, repr(self))

    @property
    def step_count(self) -> int:
        """Optimizer steps taken so far (the index of the step about to be taken)."""
        return self._step

    def values_at(self, step: int) -> dict[str, list[float]]:
        """The value of every scheduled key, per param group, at optimizer step ``step``.

        Past the end, the final values. Pure: nothing is set.
        """
        return self._values(progress(step, self.total_steps), f"step {step}")

    def _values(self, t: float, where: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for key, per_group in self.schedules.items():
            vals = [float(s(t)) for s in per_group]
            lo, hi, allowed = _ALLOWED.get(key, (-math.inf, math.inf, "finite float32 values"))
            for v in vals:
                # optimizers cast hyper-parameters to the parameters' dtype: stay in float32
                if not math.isfinite(v) or abs(v) > _FLOAT32_MAX or not lo <= v <= hi:
                    raise ConfigError(f"schedules[{key!r}]", v, f"{allowed} (at {where})")
            out[key] = vals
        return out

    def _apply(self) -> None:
        groups = self.optimizer.param_groups
        n = len(next(iter(self.schedules.values())))
        if len(groups) != n:
            self._adopt_groups(n)
        if self._t is None:
            self.applied = self.values_at(self._step)
        else:
            self.applied = self._values(self._t, f"step {self._step}, progress {self._t:g}")
        for key, vals in self.applied.items():
            for group, v in zip(groups, vals):
                _set(group, key, v)

    def _adopt_groups(self, n: int) -> None:
        now = len(self.optimizer.param_groups)
        if now < n or self.new_groups == "error":
            what = "added" if now > n else "removed"
            raise ConfigError(
                "optimizer.param_groups", f"{now} groups, {now - n:+d} since the scheduler "
                f"was built for {n}",
                f"the groups it was built for: a group {what} later would not be scheduled "
                "(its LR left as it is). Pass new_groups='follow' to schedule added groups "
                "like group 0, scaled by their LR ratio, or build the scheduler after the "
                "groups exist",
            )  # fmt: skip
        new = self.optimizer.param_groups[n:]
        for key, per_group in self.schedules.items():
            ref = self.applied[key][0] if hasattr(self, "applied") else per_group[0](0.0)
            extra = []
            for g in new:
                factor = 1.0 if key == "momentum" or ref == 0 else _get(g, key) / ref
                extra.append(Follow(per_group[0], factor))
            self.schedules[key] = (*per_group, *extra)
        log.info("scheduling %d param group(s) added after construction like group 0 "
                 "(new_groups='follow')", len(new))  # fmt: skip

    def extend(self, new_total: int, at: int | None = None) -> None:
        """Run ``new_total`` steps instead of ``total_steps``, from step ``at`` (default:
        the current step) without restarting the warm-up: the extra steps hold the values
        of step ``at``, then the rest of the plan (``onecycle.schedules.extend``). The
        position is unchanged; ``state_dict()`` stays ``{"step": n}`` and a resume must
        rebuild the same extension."""
        from onecycle.schedules import extend

        at = self._step if at is None else check_int("at", at, minimum=0)
        self.schedules = {
            key: tuple(extend(s, self.total_steps, new_total, min(at, self.total_steps - 1))
                       for s in per_group)
            for key, per_group in self.schedules.items()
        }  # fmt: skip
        self.total_steps = new_total
        self._warned_past_end = False
        self._apply()

    def check_untouched(self, stacklevel: int = 3) -> None:
        """Warn once (``ScheduleWarning``) if a scheduled value in the optimizer is no
        longer the one this scheduler set: another scheduler or a callback changed it, and
        the next step will overwrite that change."""
        if self._warned_outside:
            return
        groups = self.optimizer.param_groups
        for key, vals in self.applied.items():
            for i, (group, ours) in enumerate(zip(groups, vals)):
                now = _get(group, key)
                if not math.isclose(now, ours, rel_tol=1e-6, abs_tol=1e-12):
                    self._warned_outside = True
                    warnings.warn(
                        f"param group {i}'s {key} is {now:.6g}, but this schedule set "
                        f"{ours:.6g}: something else changed it (ReduceLROnPlateau, a "
                        "second or chained scheduler, a callback, or an optimizer state "
                        "loaded without the scheduler's). The schedule sets every step's "
                        "values and overwrites that change; compose schedules with "
                        "onecycle.schedules.join instead of chaining schedulers.",
                        ScheduleWarning, stacklevel=stacklevel,
                    )  # fmt: skip
                    return

    def step(self, t: float | None = None) -> None:
        """Advance one optimizer step and set the next step's values: those at progress
        ``t`` in [0, 1] when given (a run whose length is time: ``onecycle.budget``), else
        at ``step / (total_steps - 1)``."""
        self.check_untouched()
        self._step += 1
        if t is None:
            self._note_past_end(self._step)
        self._t = None if t is None else check_range("t", t, 0.0, 1.0)
        self._apply()

    def _note_past_end(self, step: int) -> None:
        # The call after the last step lands on total_steps; only a call beyond that is late.
        if step > self.total_steps and not self._warned_past_end:
            self._warned_past_end = True
            log.info(
                "Scheduler stepped past total_steps=%d; holding the final values.",
                self.total_steps,
            )

    def state_dict(self) -> dict[str, float]:
        """``{"step": n}``: all a resume needs, given the same schedules (and ``"t"``, the
        progress last given to ``step(t)``, in a run driven by time)."""
        return {"step": self._step} if self._t is None else {"step": self._step, "t": self._t}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Jump to ``state["step"]`` and set that step's values in the optimizer (those at
        progress ``state["t"]`` if it holds one).

        Load order does not matter: this sets the values whether the optimizer's own
        state was loaded before or after.
        """
        if not isinstance(state, Mapping) or "step" not in state:
            raise ConfigError("state", state, "a mapping with key 'step'")
        self._step = check_int("state['step']", state["step"], minimum=0)
        t = state.get("t")
        self._t = None if t is None else check_range("state['t']", t, 0.0, 1.0)
        self._apply()


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


def _describe(core: Scheduler, name: str) -> str:
    """A few lines: where the run is, and each key's value now and its schedule."""
    groups = len(core.optimizer.param_groups)
    step, total = core.step_count, core.total_steps
    lines = [
        f"{name}: step {step} of {total} ({100 * min(step, total) / total:.0f}%) on "
        f"{type(core.optimizer).__name__}, {groups} param group{'s' * (groups > 1)}"
    ]
    for key, per_group in core.schedules.items():
        now = core.applied.get(key, [])
        value = (
            f"{now[0]:.4g}"
            if len(set(now)) <= 1
            else "[" + ", ".join(f"{v:.3g}" for v in now) + "]"
        )
        shape = repr(per_group[0]) if len(set(per_group)) == 1 else f"{len(per_group)} schedules"
        shape = shape if len(shape) <= 72 else shape[:71] + "…"
        lines.append(f"  {key:<12} {value:>9}  {shape}")
    return "\n".join(lines)


def _picture(core: Scheduler, text: str) -> str:
    """Each key's schedule (the last param group's) over the run, a dot where it is now."""
    from onecycle.svg import curves_html

    n = min(core.total_steps, 200)
    ts = [i / max(1, n - 1) for i in range(n)]
    at = round(progress(core.step_count, core.total_steps) * (n - 1))
    panels = [
        (key, [float(per_group[-1](t)) for t in ts]) for key, per_group in core.schedules.items()
    ]
    return curves_html(panels, text, at=at)


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
