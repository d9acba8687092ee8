"""Drive any ``torch.optim`` optimizer's hyper-parameters from schedules: ``Scheduler``.

``Scheduler`` sets each scheduled hyper-parameter in ``optimizer.param_groups``
once per optimizer step. Its only state is the step count: resume is "rebuild
from the same config, load ``{"step": n}``". Its face for PyTorch's ``LRScheduler``
interface, ``ScheduleLR``, and that face's misuse guards are in ``onecycle.scheduler``,
which re-exports every public name here: import from there.

>>> import torch
>>> from onecycle.schedules import lin
>>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
>>> sched = Scheduler(opt, {"lr": lin(1.0, 0.0), "weight_decay": 1e-4}, total_steps=3)
>>> sched.values_at(1)
{'lr': [0.5], 'weight_decay': [0.0001]}
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim import Optimizer

from onecycle.errors import ConfigError, ScheduleWarning, check_int, check_range
from onecycle.shapes import Const, Schedule, progress

__all__ = ["Scheduler", "momentum_key"]

# The public module's name: what users (and their logging config) have always filtered on.
log = logging.getLogger("onecycle.scheduler")

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
