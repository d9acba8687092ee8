"""onecycle in PyTorch Lightning: a schedule callback and a range-test callback.

``OneCycle`` (or any schedule through ``ScheduleCallback``) installs the schedule on the
trainer's optimizer when training starts, with ``total_steps`` taken from the trainer
(``trainer.estimated_stepping_batches``: gradient accumulation, DDP sharding,
``max_steps`` and ``limit_train_batches`` included). Reading it then, and not in
``configure_optimizers``, avoids Lightning #20550 (a resumable loader's state never
restored on mid-epoch resume). The schedule advances on the optimizer's real steps (a
step that a GradScaler skips does not advance it) and its position is part of the
callback's checkpoint state, so ``trainer.fit(..., ckpt_path=...)`` continues it exactly;
resumed with more epochs than the checkpoint's run planned, the run is extended from
there without restarting the warm-up (``onecycle.schedules.extend``).
A param group added later (``BackboneFinetuning``) follows group 0's schedule, scaled by
its LR ratio (``new_groups="follow"``); a scheduler returned by ``configure_optimizers``
for the same optimizer is refused, since the two would overwrite each other.

``LRFinder`` runs onecycle's range test (``onecycle.range_test``) on the trainer's
training loader through the module's own ``training_step``, restores weights, optimizer
and random state, and hands its recommendation to a ``OneCycle(lr_max="auto")`` on the
same trainer (or sets the optimizer's LR). Its logging is muted during the sweep.

Example (``model`` a ``LightningModule`` whose ``configure_optimizers`` returns only the
optimizer)::

    trainer = L.Trainer(max_epochs=4, callbacks=[LRFinder(), OneCycle(lr_max="auto")])
    trainer.fit(model, train_loader)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch

from onecycle import schedules as S
from onecycle.errors import ConfigError
from onecycle.range_test import RangeTestResult, Step, range_test
from onecycle.scheduler import NewGroups, ScheduleLR, ScheduleSpec, momentum_key

__all__ = ["LRFinder", "OneCycle", "ScheduleCallback"]

log = logging.getLogger(__name__)


class ScheduleCallback(pl.Callback):
    """Drive ``trainer.optimizers[optimizer_index]`` with ``schedules(total_steps)``
    (a function of the run's optimizer steps, e.g. ``lambda n: {"lr": one_cycle(0.1)}``).

    ``scheduler`` is the ``ScheduleLR`` once training started (``get_last_values()``
    gives every scheduled value).
    """

    def __init__(
        self,
        schedules: Callable[[int], Mapping[str, ScheduleSpec]],
        *,
        optimizer_index: int = 0,
        new_groups: NewGroups = "follow",
    ) -> None:
        if not callable(schedules):
            raise ConfigError("schedules", schedules, "a function total_steps -> {hyper: schedule}")
        self.schedules, self.optimizer_index, self.new_groups = (
            schedules, optimizer_index, new_groups
        )  # fmt: skip
        self.scheduler: ScheduleLR | None = None
        self._pending: int | None = None  # the step a checkpoint restored
        self._pending_total: int | None = None  # and the steps that run was planned for
        self._seen = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ConfigError("trainer", f"estimated_stepping_batches={total}",
                              "a run of known length: set max_epochs or max_steps")  # fmt: skip
        total = int(total)
        opt = trainer.optimizers[self.optimizer_index]
        for config in trainer.lr_scheduler_configs:
            if getattr(config.scheduler, "optimizer", None) is opt:
                raise ConfigError(
                    "configure_optimizers", type(config.scheduler).__name__,
                    f"the optimizer alone: {type(self).__name__} schedules it, and a second "
                    "scheduler's values would be overwritten every step",
                )  # fmt: skip
        self.scheduler = ScheduleLR(opt, lambda n: self._spec(opt, n), total,
                                    new_groups=self.new_groups)  # fmt: skip
        if self._pending is not None:  # resumed; planned for fewer steps: extended (logged)
            self.scheduler.load_state_dict({"last_epoch": self._pending,
                                            "total_steps": self._pending_total})  # fmt: skip
        self._seen = self.scheduler._opt_steps
        log.info("%s: %d optimizer steps scheduled", type(self).__name__, total)

    def _spec(self, opt: torch.optim.Optimizer, total: int) -> Mapping[str, ScheduleSpec]:
        return self.schedules(total)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        s = self.scheduler
        if s is None:
            return
        while self._seen < s._opt_steps:  # one schedule step per real optimizer step
            self._seen += 1
            s.step()

    def state_dict(self) -> dict[str, Any]:
        s = self.scheduler
        if s is None:
            return {"step": self._pending, "total_steps": self._pending_total}
        return {"step": s.last_epoch, "total_steps": s.core.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("step")
        self._pending_total = state_dict.get("total_steps")


def _built_in_spec(total: int) -> dict[str, ScheduleSpec]:
    return {}  # OneCycle builds its schedules in _spec (a module-level function pickles)


class OneCycle(ScheduleCallback):
    """Smith's 1cycle on the trainer's optimizer: LR from ``lr_max/div`` up to ``lr_max``
    over ``pct_start`` of the steps, then down to ``lr_max/div_final``; momentum (or
    Adam's beta1) through ``moms``, against the LR (not cycled for an optimizer without
    momentum). ``lr_max``: one value for every param group, one per group, or ``"auto"``:
    the recommendation of an ``LRFinder`` on the same trainer."""

    def __init__(
        self,
        lr_max: float | Sequence[float] | str,
        *,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95),
        anneal: S.Anneal = "cos",
        optimizer_index: int = 0,
        new_groups: NewGroups = "follow",
    ) -> None:
        if isinstance(lr_max, str) and lr_max != "auto":
            raise ConfigError("lr_max", lr_max, "a number, one per param group, or 'auto'")
        S.one_cycle(1.0, div, div_final, pct_start, anneal)  # refuse bad values now
        self.lr_max = lr_max
        self.div, self.div_final, self.pct_start, self.moms, self.anneal = (
            div, div_final, pct_start, moms, anneal
        )  # fmt: skip
        super().__init__(_built_in_spec, optimizer_index=optimizer_index,
                         new_groups=new_groups)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lr_max": self.lr_max}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("lr_max") not in (None, "auto"):
            self.lr_max = state_dict["lr_max"]  # the value the run chose (LRFinder's)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.lr_max == "auto" and self._pending is None:
            finders = [c for c in trainer.callbacks if isinstance(c, LRFinder)]  # type: ignore[attr-defined]
            if not finders:
                raise ConfigError("lr_max", "auto", "a number, or an LRFinder in the callbacks")
            finders[0].run(trainer, pl_module)
        super().on_train_start(trainer, pl_module)

    def _spec(self, opt: torch.optim.Optimizer, total: int) -> Mapping[str, ScheduleSpec]:
        n = len(opt.param_groups)
        if isinstance(self.lr_max, str):
            raise ConfigError(
                "lr_max", "auto",
                "a number: resuming without the value the LRFinder chose (this callback's "
                "checkpoint state holds it)",
            )  # fmt: skip
        if isinstance(self.lr_max, Sequence):
            peaks = [float(v) for v in self.lr_max]
            if len(peaks) != n:
                raise ConfigError("lr_max", self.lr_max, f"{n} values, one per param group")
        else:
            peaks = [float(self.lr_max)] * n
        spec: dict[str, ScheduleSpec] = {
            "lr": [S.one_cycle(p, self.div, self.div_final, self.pct_start, self.anneal)
                   for p in peaks]
        }  # fmt: skip
        if self.moms is not None and momentum_key(opt) is not None:
            spec["momentum"] = S.one_cycle_moms(self.moms, self.pct_start, self.anneal)
        return spec


@contextmanager
def _muted(pl_module: pl.LightningModule) -> Iterator[None]:
    """``self.log`` / ``self.log_dict`` do nothing during the sweep (its losses are not the
    run's)."""
    pl_module.log = lambda *a, **k: None  # type: ignore[method-assign]
    pl_module.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del pl_module.log, pl_module.log_dict


def _loss(out: Any) -> torch.Tensor:
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor):
        raise ConfigError("training_step", type(out).__name__,
                          "a loss tensor, or a dict with 'loss' (for the range test)")  # fmt: skip
    return loss


class LRFinder(pl.Callback):
    """onecycle's LR range test at the start of training (see the module docstring).

    ``result`` holds the ``RangeTestResult`` (its ``plot(path)`` draws the curve);
    ``lr_max`` the recommended value, or None with ``result.recommended.reason``.
    Options as ``onecycle.range_test``.
    """

    def __init__(self, num_it: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0,
                 optimizer_index: int = 0) -> None:  # fmt: skip
        self.num_it, self.start_lr, self.end_lr = num_it, start_lr, end_lr
        self.optimizer_index = optimizer_index
        self.result: RangeTestResult | None = None
        self.lr_max: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> RangeTestResult:
        """Sweep once (later calls return the first result) and apply the recommendation."""
        if self.result is not None:
            return self.result
        opt = trainer.optimizers[self.optimizer_index]
        strategy = trainer.strategy

        def step(model: torch.nn.Module, batch: Any) -> torch.Tensor:
            return _loss(pl_module.training_step(strategy.batch_to_device(batch), 0))

        with _muted(pl_module):
            res = range_test(pl_module, opt, Step(step), trainer.train_dataloader,
                             start_lr=self.start_lr, end_lr=self.end_lr,
                             num_it=self.num_it)  # fmt: skip
        self.result = res
        rec = res.recommended
        if rec is None or rec.lr is None:
            why = rec.reason if rec is not None else res.stop_reason
            raise ConfigError("LRFinder", "no recommendation",
                              f"a curve that supports one ({why}): give lr_max")  # fmt: skip
        self.lr_max = float(rec.lr)
        cycles = [c for c in trainer.callbacks if isinstance(c, OneCycle)]  # type: ignore[attr-defined]
        ratios = res.group_ratios
        if cycles and cycles[0].lr_max == "auto":
            cycles[0].lr_max = [self.lr_max * r for r in ratios]
        else:
            for g, r in zip(opt.param_groups, ratios):
                g["lr"] = self.lr_max * r
        log.info("LRFinder: lr_max %.3g (%s)", self.lr_max, rec.reason)
        return res
