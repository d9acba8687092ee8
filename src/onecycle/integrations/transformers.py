"""onecycle in the Hugging Face ``Trainer``: 1cycle without computing ``total_steps``.

``OneCycleTrainer`` is a ``transformers.Trainer`` whose scheduler is onecycle's
``ScheduleLR``, built in ``create_scheduler`` from the step count the Trainer itself
computed (``max_steps``: after gradient accumulation, per process under ``torchrun``), so
it cannot be off by the factors a hand count misses (issue: 228 steps counted, 116 run
on 2 processes, training ended at 73% of the peak). ``args.learning_rate`` is the peak;
momentum (Adam's beta1) is cycled against the LR and logged next to it as ``momentum``.
Checkpoints hold the scheduler's step: ``train(resume_from_checkpoint=...)`` continues
the cycle exactly, and with more epochs than the checkpoint's run it extends that run
from there without restarting the warm-up.

``MomentumLogger`` adds ``momentum`` to the logs of a plain ``Trainer`` with any
scheduler (``MomentumLogger.install(trainer)`` puts it before the reporting callbacks).

The range test on an HF model: ``onecycle.range_test(model, optimizer, None,
trainer.get_train_dataloader())`` (``None``: the model's own loss, as HF models compute
it from the batch's ``labels``). Example::

    args = TrainingArguments("out", learning_rate=3e-4, num_train_epochs=3)
    trainer = OneCycleTrainer(model=model, args=args, train_dataset=train)
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import transformers

from onecycle import schedules as S
from onecycle.errors import ConfigError
from onecycle.scheduler import ScheduleLR, ScheduleSpec, momentum_key

__all__ = ["MomentumLogger", "OneCycleTrainer"]


def _momentum(optimizer: Any) -> float | None:
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer
    if not isinstance(opt, torch.optim.Optimizer) or momentum_key(opt) is None:
        return None
    group = opt.param_groups[0]
    return float(group["momentum"] if "momentum" in group else group["betas"][0])


class OneCycleTrainer(transformers.Trainer):
    """A ``Trainer`` with Smith's 1cycle: the LR rises from ``learning_rate/div`` to
    ``learning_rate`` over ``pct_start`` of the run, then anneals to
    ``learning_rate/div_final``; momentum (beta1) moves through ``moms`` against it.
    ``schedules``: any ``total_steps -> {hyper: schedule}`` instead (``lr_max`` etc. are
    then unused). Other arguments are the ``Trainer``'s."""

    def __init__(
        self,
        *args: Any,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95),
        anneal: S.Anneal = "cos",
        schedules: Callable[[int], Mapping[str, ScheduleSpec]] | None = None,
        **kwargs: Any,
    ) -> None:
        S.one_cycle(1.0, div, div_final, pct_start, anneal)  # refuse bad values now
        if schedules is not None and not callable(schedules):
            raise ConfigError("schedules", schedules, "a function total_steps -> {hyper: schedule}")
        self.one_cycle = {"div": div, "div_final": div_final, "pct_start": pct_start,
                          "anneal": anneal}  # fmt: skip
        self.moms, self.schedules = moms, schedules
        super().__init__(*args, **kwargs)

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None:
            opt = optimizer if optimizer is not None else self.optimizer
            opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper: the torch optimizer
            # a plan per step count: a checkpoint of a shorter run (fewer epochs) is
            # extended from where it stopped, not restarted (ScheduleLR.load_state_dict)
            peak = float(self.args.learning_rate)  # group ratios as the optimizer was built
            ratios = [float(g["lr"]) / peak if peak else 1.0 for g in opt.param_groups]
            has_momentum = momentum_key(opt) is not None
            self.lr_scheduler = ScheduleLR(opt, lambda n: self._spec(n, ratios, has_momentum),
                                           num_training_steps)  # fmt: skip
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _spec(
        self, total: int, ratios: list[float], has_momentum: bool
    ) -> Mapping[str, ScheduleSpec]:
        if self.schedules is not None:
            return self.schedules(total)
        peak = float(self.args.learning_rate)
        spec: dict[str, ScheduleSpec] = {
            "lr": [S.one_cycle(peak * r, **self.one_cycle) for r in ratios]  # type: ignore[arg-type]
        }
        if self.moms is not None and has_momentum:
            spec["momentum"] = S.one_cycle_moms(
                self.moms, self.one_cycle["pct_start"], self.one_cycle["anneal"]
            )  # type: ignore[arg-type]
        return spec

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "learning_rate" in logs:
            m = _momentum(self.optimizer)
            if m is not None:
                logs["momentum"] = m
        super().log(logs, *args, **kwargs)


class MomentumLogger(transformers.TrainerCallback):
    """Adds ``momentum`` (SGD's momentum or Adam's beta1) next to ``learning_rate`` in a
    ``Trainer``'s logs and ``state.log_history``. Install it first
    (``MomentumLogger.install(trainer)``) so that the reporting callbacks (TensorBoard,
    W&B, ...) see it."""

    @classmethod
    def install(cls, trainer: transformers.Trainer) -> MomentumLogger:
        cb = cls()
        trainer.callback_handler.callbacks.insert(0, cb)
        return cb

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               optimizer: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if logs is None or "learning_rate" not in logs:
            return
        m = _momentum(optimizer)
        if m is None:
            return
        logs["momentum"] = m
        if state.log_history and state.log_history[-1].get("learning_rate") == logs.get(
            "learning_rate"
        ):  # fmt: skip
            state.log_history[-1]["momentum"] = m
