"""Drive any ``torch.optim`` optimizer's hyper-parameters from schedules.

``Scheduler`` sets each scheduled hyper-parameter in ``optimizer.param_groups``
once per optimizer step. Its only state is the step count: resume is "rebuild
from the same config, load ``{"step": n}``". ``ScheduleLR`` wraps it in
PyTorch's ``LRScheduler`` interface for plain loops, Lightning and HF users.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from onecycle.errors import ConfigError, check_int
from onecycle.schedules import Schedule, progress

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


def _set(group: dict[str, Any], key: str, value: float) -> None:
    if key == "momentum" and "momentum" not in group:
        # Adam-style: momentum is beta1; beta2 stays as the user set it.
        group["betas"] = (value, group["betas"][1])
    elif isinstance(group.get(key), torch.Tensor):
        group[key].fill_(value)  # tensor LRs (capturable/fused optimizers) keep their identity
    else:
        group[key] = value


class Scheduler:
    """Apply ``{hyper: schedule}`` to an optimizer's param groups, once per optimizer step.

    Args:
        optimizer: any ``torch.optim.Optimizer``; only its ``param_groups`` are touched.
        schedules: ``{key: schedule}`` or ``{key: [schedule per param group]}``. Keys are
            ``"lr"``, ``"momentum"`` (SGD/RMSprop ``momentum`` or Adam-style ``betas[0]``),
            ``"weight_decay"``, or any other key the param groups already have.
        total_steps: number of optimizer steps in the run, >= 1. Step ``i`` uses progress
            ``i / (total_steps - 1)``: the first step gets each schedule's start value,
            the last step its end value.

    The values for step 0 are set at construction (``applied`` holds what was last set).
    Call ``step()`` after each ``optimizer.step()``. Past ``total_steps`` the final values
    are held (logged once), never extrapolated and never an error.

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
        self, optimizer: Optimizer, schedules: Mapping[str, ScheduleSpec], total_steps: int
    ) -> None:
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
        self._warned_past_end = False
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

    @property
    def step_count(self) -> int:
        """Optimizer steps taken so far (the index of the step about to be taken)."""
        return self._step

    def values_at(self, step: int) -> dict[str, list[float]]:
        """The value of every scheduled key, per param group, at optimizer step ``step``.

        Past the end, the final values. Pure: nothing is set.
        """
        t = progress(step, self.total_steps)
        out: dict[str, list[float]] = {}
        for key, per_group in self.schedules.items():
            vals = [float(s(t)) for s in per_group]
            lo, hi, allowed = _ALLOWED.get(key, (-math.inf, math.inf, "finite float32 values"))
            for v in vals:
                # optimizers cast hyper-parameters to the parameters' dtype: stay in float32
                if not math.isfinite(v) or abs(v) > _FLOAT32_MAX or not lo <= v <= hi:
                    raise ConfigError(f"schedules[{key!r}]", v, f"{allowed} (at step {step})")
            out[key] = vals
        return out

    def _apply(self) -> None:
        self.applied = self.values_at(self._step)
        for key, vals in self.applied.items():
            for group, v in zip(self.optimizer.param_groups, vals):
                _set(group, key, v)

    def step(self) -> None:
        """Advance one optimizer step and set the next step's values."""
        self._step += 1
        self._note_past_end(self._step)
        self._apply()

    def _note_past_end(self, step: int) -> None:
        # The call after the last step lands on total_steps; only a call beyond that is late.
        if step > self.total_steps and not self._warned_past_end:
            self._warned_past_end = True
            log.info(
                "Scheduler stepped past total_steps=%d; holding the final values.",
                self.total_steps,
            )

    def state_dict(self) -> dict[str, int]:
        """``{"step": n}``: all a resume needs, given the same schedules."""
        return {"step": self._step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Jump to ``state["step"]`` and set that step's values in the optimizer.

        Load order does not matter: this sets the values whether the optimizer's own
        state was loaded before or after.
        """
        if not isinstance(state, Mapping) or "step" not in state:
            raise ConfigError("state", state, "a mapping with key 'step'")
        self._step = check_int("state['step']", state["step"], minimum=0)
        self._apply()


class ScheduleLR(LRScheduler):
    """A onecycle schedule behind PyTorch's ``LRScheduler`` interface.

    Drop-in for ``OneCycleLR``/``CyclicLR`` in a plain loop, Lightning
    (``{"scheduler": s, "interval": "step"}``) or Hugging Face: call ``step()``
    after each ``optimizer.step()``. Non-LR keys (momentum, weight decay) are
    driven too. ``state_dict()`` is ``{"last_epoch": n, "_step_count": k}`` and loads
    with ``torch.load(weights_only=True)``; loading sets the values at once, so the
    first resumed step is right whatever the load order.

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
        schedules: Mapping[str, ScheduleSpec],
        total_steps: int,
        last_epoch: int = -1,
    ) -> None:
        self.core = Scheduler(optimizer, schedules, total_steps)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # LRScheduler.step() has already advanced last_epoch; set every key, return the LRs.
        self.core._note_past_end(self.last_epoch)
        self.core.load_state_dict({"step": max(self.last_epoch, 0)})
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = check_int("last_epoch", state_dict["last_epoch"], minimum=0)
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self.core.load_state_dict({"step": self.last_epoch})
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
