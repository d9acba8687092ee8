"""The training loop: ``Loop``, the Learner's state and ``fit``, read top to bottom.

This module holds the loop whole: one epoch, one batch, one optimizer step, validation.
What surrounds it lives beside it: parameter groups, freezing and decoupled weight decay
in ``onecycle.params``; the process group (DDP wrapping, sharding, reduced losses) behind
``onecycle.distributed.Replicas``; resuming in ``onecycle.resume``; predictions, saving and
the summary in ``onecycle.inference``, ``onecycle.persist`` and ``onecycle.summary``, bound
as methods. The method's fits (``fit_one_cycle``, ``fine_tune``, ``lr_find``, ...) are in
``onecycle.recipes``, above this floor: ``onecycle.learner.Learner`` is this ``Loop`` with
them as methods. Nothing here imports the recipes or the auto search, and everything a
callback may touch is a plain attribute (``onecycle.state.TrainState``); nothing is patched.

>>> import torch
>>> from onecycle.data import Loader
>>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
>>> loop = Loop(torch.nn.Linear(2, 2), Loader(x, y, 16), Loader(x, y, 64),
...             loss_func=torch.nn.functional.cross_entropy, metrics=[accuracy])
>>> loop.fit(2, lr=0.5)
>>> loop.recorder.rows[-1]["accuracy"] > 0.9
True
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from onecycle import batch as B
from onecycle import inference, persist
from onecycle import params as P
from onecycle import schedules as S
from onecycle import summary as summary_
from onecycle import tta as T
from onecycle.budget import TimeBudget, check_fit
from onecycle.callbacks import (
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    GradientAccumulation,
    Recorder,
    default_callbacks,
    event_table,
)
from onecycle.data.loader import to_device
from onecycle.distributed import Replicas, check_device, model_device
from onecycle.errors import ConfigError, check_finite, check_int
from onecycle.params import LR, sgd
from onecycle.resume import fit_signature, resume_from
from onecycle.scheduler import Scheduler, ScheduleSpec

if TYPE_CHECKING:
    from onecycle.range_test import RangeTestResult

__all__ = ["Loop", "accuracy"]

log = logging.getLogger("onecycle.learner")  # the loop's messages are the Learner's

Schedules = Mapping[str, ScheduleSpec]


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max equals the target class.

    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])).item()
    0.5
    """
    return (pred.argmax(dim=-1) == target).float().mean()


class Loop:
    """A model, its data, and the training loop over them: ``fit`` and ``validate``, the
    parameter groups, predictions, saving and the summary. ``onecycle.learner.Learner`` is
    this class with the method's fits as methods, and is what users build; its docstring
    describes every argument. Everything here works without the recipes: ``fit`` takes any
    ``{hyper: schedule}``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Iterable[Any],
        valid_data: Iterable[Any] | None = None,
        *,
        loss_func: Callable[[Any, Any], torch.Tensor] | None,
        opt_func: Callable[[Any, float], torch.optim.Optimizer] = sgd,
        metrics: Sequence[Callable[[Any, Any], torch.Tensor]] = (),
        cbs: Sequence[Callback] = (),
        wd: float = 5e-4,
        wd_bn_bias: bool = False,
        splitter: Callable[[nn.Module], list[list[nn.Parameter]]] | None = None,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
        train_bn: bool = True,
        device: torch.device | str | None = None,
        split_batch: Callable[[Any], tuple[Any, Any]] | None = None,
        progress: bool | None = None,
    ) -> None:
        metrics = _check_args(model, train_data, valid_data, loss_func, opt_func, metrics, wd)
        self.device = check_device("device", device) if device is not None else model_device(model)
        self.model = model.to(self.device)
        self.train_data, self.valid_data = train_data, valid_data
        self.loss_func, self.opt_func, self.metrics = loss_func, opt_func, metrics
        if split_batch is not None and not callable(split_batch):
            raise ConfigError("split_batch", split_batch, "a callable batch -> (inputs, target)")
        self.split_batch = split_batch or B.split_batch
        self.wd, self.wd_bn_bias, self.train_bn = float(wd), bool(wd_bn_bias), bool(train_bn)
        self.moms = moms
        self.splitter = splitter or P.one_group
        self.param_groups, self._norm_ids = P.split(self.model, self.splitter)
        self.opt: torch.optim.Optimizer | None = None
        self.recorder = Recorder()
        self.cbs: list[Callback] = [self.recorder, *default_callbacks(cbs, progress), *cbs]
        self._cb_table = self._bind(self.cbs)
        # loop state, readable by callbacks
        self.scheduler: Scheduler | None = None
        self.epoch = self.n_epoch = self.iter = self.n_iter = 0
        self.accumulate = 1
        self.will_step = False
        self.autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
        self.scaler: torch.amp.GradScaler | None = None
        self.valid_results: dict[str, float] = {}
        self.lr_find_result: RangeTestResult | None = None
        self.auto_result: Any = None  # what lr_max="auto" saw and chose (onecycle.auto)
        self.auto_wd_result: Any = None  # what wd="auto" saw and chose
        self.step_values: dict[str, list[float]] = {}  # hyper-parameters of the last step
        self.fit_signature = ""  # what a checkpoint must match to resume this fit
        self.resuming = False  # this fit was given resume= (a Checkpoint's folder may hold files)
        self.fit_plan: dict[str, Any] = {}  # its length, and how it was extended (if it was)
        self.budget: TimeBudget | None = None  # the fit's time budget (fit(budget=...))
        self.clock: Callable[[], float] = time.monotonic  # seconds: what a budget counts
        self.run_config: dict[str, Any] = {}  # stored in checkpoints (the CLI's config)
        self.epoch_completed = False
        self.batch: Any = None
        self.pred: Any = None
        self.loss: torch.Tensor = torch.zeros(())
        self.loss_global: torch.Tensor = self.loss  # the loss averaged over ranks (DDP)
        self.replicas = Replicas(self.device)  # the process group's view (no-op without one)

    # --- parameter groups, freezing, weight decay (onecycle.params) ---------------------------

    trainable_params = P.trainable_params
    freeze_to = P.freeze_to
    freeze = P.freeze
    unfreeze = P.unfreeze
    group_values = P.group_values

    def steps_per_epoch(self, cbs: Sequence[Callback] = ()) -> int:
        """Optimizer steps in one epoch of ``train_data`` (accumulation from ``cbs`` or
        the Learner's callbacks included; under DDP, per rank)."""
        acc = self.accumulate
        for cb in [*self.cbs, *cbs]:
            if isinstance(cb, GradientAccumulation):
                acc = cb.n
        self._setup_distributed()
        return math.ceil(len(self.train_data) / acc)  # type: ignore[arg-type]

    def _make_opt(self, lrs: list[float]) -> None:
        self.opt = P.make_optimizer(self.opt_func, self.param_groups, lrs, self.wd)

    def _setup_distributed(self) -> None:
        """Under a process group: shard the data, wrap the model (``Replicas.prepare``)."""
        self.train_data, self.valid_data = self.replicas.prepare(
            self.model, self.train_data, self.valid_data)  # fmt: skip

    @property
    def ddp_model(self) -> nn.Module | None:
        """The DDP wrapper during a fit under ``torch.distributed``, else None."""
        return self.replicas.wrapper

    # --- the loop ------------------------------------------------------------------------------

    def fit(
        self,
        n_epoch: int,
        lr: LR = 1e-2,
        *,
        schedules: Schedules | Callable[[int], Schedules] | None = None,
        wd: float | None = None,
        cbs: Sequence[Callback] = (),
        start_epoch: int = 0,
        reset_opt: bool = False,
        resume: str | Path | Mapping[str, Any] | None = None,
        extend: bool = False,
        budget: float | str | None = None,
        _total_steps: int | None = None,
    ) -> None:
        """Train for ``n_epoch`` epochs.

        ``lr`` sets the learning rate per group (float, slice or sequence) when no schedule
        gives it. ``schedules`` is ``{hyper: schedule}`` over the whole fit (progress 0 to 1
        over all its optimizer steps), or a function ``total_steps -> schedules`` for
        schedules that need the step count (CLR). ``start_epoch`` skips the first epochs,
        schedule included (resume at an epoch boundary, as fastai).

        ``resume``: a checkpoint file, a folder of them, or ``"auto"`` (the folder of the
        ``Checkpoint`` callback in use): continue from the newest good checkpoint, mid-epoch
        and mid-cycle, exactly (bit-identical on CPU with ``onecycle.data.Loader``). With
        no checkpoint there yet, training starts fresh (logged). ``extend=True``: the
        checkpoint may come from the same fit with fewer epochs; it is lengthened to
        ``n_epoch`` from the saved step without restarting the warm-up
        (``onecycle.schedules.extend``; a deliberate departure from the fixed cycle).

        ``budget``: seconds, or ``"90s"``, ``"3m"``, ``"1.5h"``: the schedules' progress is
        the time used (on ``self.clock``) over the budget, and the fit ends on time with
        them at their end values; ``n_epoch`` is then an upper bound (``onecycle.budget``).
        """
        started = self.clock()  # a budget counts the whole fit
        n_epoch, start_epoch, wd_now = _check_fit_args(n_epoch, start_epoch, wd, self.wd,
                                                       resume, extend)  # fmt: skip
        seconds = check_fit(budget, schedules=schedules, start_epoch=start_epoch,
                            extend=extend, total_steps=_total_steps)  # fmt: skip
        self.budget = None
        lrs = self.group_values(lr)
        if self.opt is None or reset_opt:
            self._make_opt(lrs)
        assert self.opt is not None
        for group in self.opt.param_groups:
            group["wd"] = wd_now  # decoupled, applied by the Learner; schedulable as "wd"
        self.n_epoch, self.resuming = n_epoch, resume is not None
        self._setup_distributed()
        extra = sorted(cbs, key=lambda c: c.order)
        self._cb_table = self._bind([*self.cbs, *extra])
        try:
            self._event("before_fit")
            self.n_iter = len(self.train_data)  # type: ignore[arg-type]
            steps_per_epoch = math.ceil(self.n_iter / self.accumulate)
            # the range test and probes (onecycle.auto) run a schedule over fewer steps
            total = _total_steps or n_epoch * steps_per_epoch

            def plan(steps: int) -> dict[str, ScheduleSpec]:  # this fit's schedules
                spec = schedules(steps) if callable(schedules) else schedules
                return dict(spec) if spec else {"lr": [S.const(v) for v in lrs]}

            spec = plan(total)
            self.scheduler = Scheduler(self.opt, spec, total)
            if start_epoch:
                self.scheduler.load_state_dict({"step": start_epoch * steps_per_epoch})
            self._decay = P.decay_params(self.param_groups, self._norm_ids, self.wd_bn_bias)
            self.fit_plan = {"n_epoch": n_epoch, "total_steps": total, "base_total": total,
                             "extends": []}  # fmt: skip
            if seconds is not None:
                self.fit_plan["budget"] = seconds
                self.budget = TimeBudget(seconds, max_steps=total, steps_per_epoch=steps_per_epoch,
                                         clock=self.clock, start=started,
                                         agree=self.replicas.agree)  # fmt: skip
            self.fit_signature = fit_signature(self.fit_plan, self.accumulate, spec)
            skip = 0
            if resume is not None:
                start_epoch, skip = resume_from(self, resume, extra, plan=plan, extend=extend)
            for self.epoch in range(start_epoch, n_epoch):
                if self._time_is_up() and not (skip and self.epoch == start_epoch):
                    break  # the budget's last step is taken (and its epoch validated)
                self._do_epoch(skip if self.epoch == start_epoch else 0)
            if self.budget is not None:  # every rank is here: the time they agree on
                self.budget.finish(self.scheduler.step_count, agree=True)
        except CancelFit:
            pass
        finally:
            if self.budget is not None and self.budget.used is None:  # stopped early
                self.budget.finish(self.scheduler.step_count if self.scheduler else 0)
            self._event("after_fit")
            self._cb_table = self._bind(self.cbs)
            self.replicas.release()

    def _do_epoch(self, skip: int = 0) -> None:
        self.epoch_completed = False
        self._event("before_epoch")
        try:
            self._do_train(skip)
            if self.valid_data is not None:
                self.valid_results = self._do_validate(self.valid_data)
            self.epoch_completed = True
        except CancelEpoch:
            self.epoch_completed = True  # skipped on purpose: the next epoch comes next
        finally:
            self._event("after_epoch")

    def _do_train(self, skip: int = 0) -> None:
        """One pass over the training data; ``skip``: batches already done (resume)."""
        self.model.train()
        if skip == 0 and hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(self.epoch)
        elif hasattr(getattr(self.train_data, "sampler", None), "set_epoch"):
            self.train_data.sampler.set_epoch(self.epoch)  # DistributedSampler
        self.valid_results = {}
        self._event("before_train")
        # A loader that was positioned by load_state_dict starts at batch `skip` by itself;
        # any other iterable is wound forward (exact only if its order is deterministic).
        positioned = skip > 0 and hasattr(self.train_data, "load_state_dict")
        batches = () if self._time_is_up() else self.train_data  # resumed after the last step
        for i, batch in enumerate(batches, start=skip if positioned else 0):
            if i < skip:
                continue
            self.iter = i
            self._do_batch(batch)
            if self._time_is_up():
                break  # a time budget's last step: this epoch validates, and the fit ends
        self._event("after_train")

    def _time_is_up(self) -> bool:
        return self.budget is not None and self.budget.done

    def _do_batch(self, batch: Any) -> None:
        assert self.opt is not None and self.scheduler is not None
        self.batch = to_device(batch, self.device)
        acc = self.accumulate
        group_start = (self.iter // acc) * acc
        group_size = min(acc, self.n_iter - group_start)
        self.will_step = self.iter + 1 == group_start + group_size
        model = self.replicas.forward_model(self.model)
        sync = self.replicas.sync(self.will_step)
        try:
            self._event("before_batch")
            with sync:
                with self.autocast():
                    _, _, self.pred, self.loss = B.forward(
                        model, self.batch, self.split_batch, self.loss_func,
                        ("train_data", f"epoch {self.epoch}, batch {self.iter}"))  # fmt: skip
                self.loss_global = self.replicas.reduce_loss(self.loss)
                self._event("after_loss")
                loss = self.loss / group_size if group_size > 1 else self.loss
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            self._event("after_backward")
            if self.will_step and self._optimizer_step():
                self._event("after_step")
        except CancelBatch:
            self.opt.zero_grad(set_to_none=True)
        finally:
            self._event("after_batch")

    def _optimizer_step(self) -> bool:
        """Weight decay, step, zero grads; advance the schedule only if the step happened."""
        assert self.opt is not None and self.scheduler is not None
        if self.scaler is None:
            P.weight_decay(self.opt, self._decay)
            self.opt.step()
            stepped = True
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.opt)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # the scale drops only on a skip
            if stepped:
                P.weight_decay(
                    self.opt, self._decay
                )  # after the step here: a skipped step must not decay
        self.opt.zero_grad(set_to_none=True)
        if stepped:
            self.step_values = self.scheduler.applied  # what this step used, for callbacks
            t = None  # a time budget: the next step's progress is time, its pace measured
            if self.budget is not None:
                t = self.budget.next_progress(self.scheduler.step_count + 1, self.epoch,
                                              self.iter // self.accumulate + 1)  # fmt: skip
            self.scheduler.step(t)
        return stepped

    @torch.no_grad()
    def _do_validate(self, data: Iterable[Any], tta: T.TTA = None) -> dict[str, float]:
        """Loss and metrics per sample; ``tta``: from outputs averaged over views."""
        views = T.views(tta) if tta is not None else None  # checked before any batch
        if views is not None and self.loss_func is None:
            raise ConfigError("tta", tta, "None for a model that computes its own loss "
                              "(loss_func=None): the loss needs the averaged outputs")  # fmt: skip
        self.model.eval()
        self._event("before_validate")
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        sums = [torch.zeros((), dtype=torch.float64, device=self.device) for _ in self.metrics]
        n = 0
        for i, batch in enumerate(data):
            with self.autocast():
                if views is None:
                    inputs, yb, pred, loss = B.forward(self.model, to_device(batch, self.device),
                                                       self.split_batch, self.loss_func,
                                                       ("valid_data", f"batch {i}"))  # fmt: skip
                else:
                    inputs, yb = self.split_batch(to_device(batch, self.device))
                    pred = T.outputs(self.model, inputs, views)
                    loss = self.loss_func(pred, yb)  # type: ignore[misc]
            B.check_target(yb, self.metrics)
            bs = B.batch_size(inputs, yb)
            total += loss.detach().double() * bs
            for i, m in enumerate(self.metrics):
                sums[i] += m(pred, yb).detach().double() * bs
            n += bs
        count = torch.tensor(float(n), dtype=torch.float64, device=self.device)
        total, *sums, count = self.replicas.reduce_sums([total, *sums, count])
        n = int(count.item())
        if n == 0:
            raise ConfigError("valid_data", "an empty iterable", "at least one batch")
        results = {"valid_loss": float(total) / n}
        for m, s in zip(self.metrics, sums):
            results[getattr(m, "__name__", type(m).__name__)] = float(s) / n
        self._event("after_validate")
        return results

    def validate(self, data: Iterable[Any] | None = None, *, tta: T.TTA = None) -> dict[str, float]:
        """Loss and metrics on ``data`` (default: ``valid_data``), averaged per sample;
        ``tta``: from the outputs averaged over views of each input (``onecycle.tta``)."""
        data = data if data is not None else self.valid_data
        if data is None:
            raise ConfigError("data", None, "validation batches (none given to the Learner)")
        return self._do_validate(data, tta)

    # --- predictions, saving, at a glance (onecycle.inference, persist, summary) --------------

    get_preds = inference.get_preds
    predict = inference.predict
    save = persist.save
    load = persist.load
    summary = summary_.summary
    __repr__ = summary_.describe

    # --- events -------------------------------------------------------------------------------

    def _bind(self, cbs: Sequence[Callback]) -> dict[str, list[Callable[[Loop], None]]]:
        self.fit_cbs = list(cbs)  # this fit's callbacks (checkpoints keep their state)
        return event_table(cbs)

    def _event(self, name: str) -> None:
        for fn in self._cb_table[name]:
            fn(self)


def _check_fit_args(n_epoch: Any, start_epoch: Any, wd: Any, default_wd: float, resume: Any,
                    extend: bool) -> tuple[int, int, float]:  # fmt: skip
    """``fit``'s arguments checked: ``(n_epoch, start_epoch, wd)``."""
    n_epoch = check_int("n_epoch", n_epoch)
    start_epoch = check_int("start_epoch", start_epoch, minimum=0)
    if start_epoch >= n_epoch:
        raise ConfigError("start_epoch", start_epoch, f"an integer < n_epoch={n_epoch}")
    if extend and resume is None:
        raise ConfigError("extend", extend, "False unless resume is given (it lengthens a "
                          "saved run)")  # fmt: skip
    wd_now = default_wd if wd is None else check_finite("wd", wd)
    if wd_now < 0:
        raise ConfigError("wd", wd, "a number >= 0")
    return n_epoch, start_epoch, wd_now


def _check_args(model: Any, train_data: Any, valid_data: Any, loss_func: Any, opt_func: Any,
                metrics: Any, wd: Any) -> list[Callable[[Any, Any], torch.Tensor]]:  # fmt: skip
    """The Learner's arguments checked (ConfigError naming the first bad one); the metrics
    as a list."""
    if not isinstance(model, nn.Module):
        raise ConfigError("model", type(model).__name__, "a torch.nn.Module")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model", type(model).__name__, "a model with trainable parameters")
    if loss_func is not None and not callable(loss_func):
        raise ConfigError("loss_func", loss_func, "a callable (pred, target) -> loss, or None")
    _check_data("train_data", train_data)
    if valid_data is not None:
        _check_data("valid_data", valid_data)
    if not callable(opt_func):
        raise ConfigError("opt_func", opt_func, "a callable (param_groups, lr) -> optimizer")
    if callable(metrics):  # metrics=accuracy: one metric, meant as [accuracy]
        metrics = [metrics]
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Iterable) or not all(
        callable(m) for m in metrics
    ):  # fmt: skip
        raise ConfigError("metrics", metrics, "a list of callables (pred, target) -> value")
    if check_finite("wd", wd) < 0:
        raise ConfigError("wd", wd, "a number >= 0")
    return list(metrics)


def _check_data(name: str, data: Any) -> None:
    if not hasattr(data, "__iter__"):
        raise ConfigError(name, type(data).__name__, "an iterable of (x, y) batches")
    try:
        n = len(data)
    except TypeError:
        raise ConfigError(name, type(data).__name__, "batches with a length (len(data))") from None
    if n == 0:
        raise ConfigError(name, "0 batches", "at least one batch (is batch_size > data size?)")
