"""A lower peak when the run at ``lr_max="auto"``'s pick collapses.

Short probes rank the candidate peaks on a few percent of the run; the run then spends
far longer near its peak. Now and then the peak that probed best is not stable over the
whole run: MNIST-1D's CNN under SGD trains at 0.316 in most seeds and, in some, falls back
to chance on the way up and stays there. ``CollapseGuard`` watches the run's training
loss; ``fit_with_fallbacks`` puts everything back (``range_test.Snapshot``: weights,
optimizer, random state, loader position) and runs again at the next lower candidate
when it fires, so the run that remains is exactly the run at that peak.

A collapse is one of (``CollapseGuard``):

- a non-finite loss;
- the smoothed training loss (an EMA over 2% of the run, of losses capped at the starting
  level) back within ``LOST`` (10%) of its starting level, after it had fallen at least
  5% below it, for ``SUSTAIN`` (5%) of the run's steps in a row: a catapult that comes
  back down is not a collapse;
- no progress at all by the end of the warm-up (the smoothed loss never 1% below its
  start), though a probe trained (``AutoResult.trained``: on a plateau that no probe
  left, a run may leave it only after its warm-up, as MNIST-1D's GRU under SGD does at
  0.316); only when the warm-up is at least four smoothing windows long.

The steps spent before a collapse are counted in ``AutoResult.compute_ratio`` and listed
in ``AutoResult.rollbacks``; a warning says what happened. The lowest candidate has no
fallback: a collapse there is left for the user to see.

A run that never trained (its smoothed training loss never fell ``FELL``, 5%, below its
start: 1% is within the batch noise of a model that only learns to answer uniformly; e.g.
on a plateau that no candidate left: a plain CNN without normalisation under SGD) is not
run again for that reason (a lower peak leaves a plateau later, not sooner), but it is
not silent either: ``AutoResult.stalled`` is set and a warning says that the result is
not what the model can do. The lowest candidate is watched for this too.

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(512, 4); y = (x[:, 0] > 0).long()
>>> learn = Learner(torch.nn.Linear(4, 2), Loader(x, y, 32),
...                 loss_func=torch.nn.functional.cross_entropy)
>>> guard = CollapseGuard(total_steps=16, pct_start=0.25)
>>> learn.fit_one_cycle(1, 0.1, cbs=[guard])
>>> guard.fired is None, len(guard.losses)
(True, 16)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from onecycle.callbacks import Callback, CancelFit, NonFiniteLossError
from onecycle.errors import ConfigError, check_int
from onecycle.probes import learner_snapshot

if TYPE_CHECKING:
    from onecycle.auto import AutoResult
    from onecycle.loop import Loop

__all__ = ["CollapseGuard", "fit_with_fallbacks"]

log = logging.getLogger(__name__)

# The smoothing window, as a fraction of the run's steps (at least MIN_WINDOW steps).
WINDOW, MIN_WINDOW = 0.02, 10
# A collapse: back within LOST of the starting level for SUSTAIN of the run in a row...
LOST, SUSTAIN, MIN_SUSTAIN = 0.1, 0.05, 20
# ...after the loss had fallen FELL (relative) below its start; or never PROGRESS below
# its start by the end of the warm-up.
FELL, PROGRESS = 0.05, 0.01


class Collapsed(CancelFit):
    """Raised by ``CollapseGuard`` to end the fit early (``fit`` returns normally)."""


class CollapseGuard(Callback):
    """Ends the fit when its training loss collapses (the module docstring says when);
    ``fired`` is then the reason and ``step`` the optimizer step.

    ``pct_start``: the warm-up's share of the run (the "no progress" check runs at its
    end); None skips that check (schedules without a warm-up, and runs whose search saw
    no probe train: ``AutoResult.trained``). Under DDP the loss is the
    mean over the ranks, so every rank fires at the same step.

    ``fire=False``: the guard only watches (``progressed``), it never ends the fit.

    One guard watches one run of ``total_steps``, which may be several fits in a row
    (``fine_tune``'s frozen and unfrozen phases): nothing is reset between them, so the
    starting level stays the run's and ``step`` counts from its first step.
    """

    order = 1  # after NonFiniteGuard

    def __init__(self, total_steps: int, pct_start: float | None = 0.25, *,
                 fire: bool = True) -> None:  # fmt: skip
        self.total = check_int("total_steps", total_steps)
        self.pct_start = pct_start
        self.fire = fire  # False: only watch (``progressed``), never end the fit
        self.window = max(MIN_WINDOW, round(WINDOW * self.total))
        self.sustain = max(MIN_SUSTAIN, round(SUSTAIN * self.total))
        self.fired: str | None = None
        self.step = 0
        self.losses: list[float] = []
        self._ema, self._start, self._best, self._bad = 0.0, math.nan, math.inf, 0

    def before_fit(self, learn: Loop) -> None:
        if self.fired is not None or self.step >= self.total:
            done = f"it fired ({self.fired})" if self.fired else f"its {self.total} steps ran"
            raise ConfigError("cbs", "CollapseGuard", f"a new guard for a new run: {done}")

    def _fire(self, why: str) -> None:
        if not self.fire:
            return
        self.fired = why
        raise Collapsed(why)

    @property
    def progressed(self) -> bool | None:
        """Whether the smoothed training loss has been ``FELL`` (5%) below its start: the
        run trained (None: too few steps watched to say)."""
        if not math.isfinite(self._start) or not math.isfinite(self._best):
            return None
        return self._start - self._best >= FELL * (abs(self._start) or 1.0)

    def replay(self, losses: Sequence[float]) -> None:
        """Take the training losses of steps already run (the search's prefix that this
        run continues) as if watched: the starting level is the run's, not the prefix's
        end. Nothing fires on them (the search scored that prefix)."""
        for loss in losses:
            try:
                self._observe(float(loss))
            except Collapsed:
                self.fired = None
                self._bad = 0

    def after_step(self, learn: Loop) -> None:
        self._observe(float(learn.loss_global.detach().float().mean()))

    def _observe(self, loss: float) -> None:
        self.step += 1
        self.losses.append(loss)
        if not math.isfinite(loss):
            self._fire(f"non-finite loss ({loss}) at step {self.step}")
        n0 = min(self.window, MIN_WINDOW)
        if self.step == n0:  # the level the run starts from
            self._start = sum(self.losses) / n0
        # capped at the start: a spike far above it must not hold the average up for long
        beta = 1 - 1 / self.window
        self._ema = beta * self._ema + (1 - beta) * (loss if self.step <= n0 else
                                                     min(loss, self._start))  # fmt: skip
        smooth = self._ema / (1 - beta**self.step)
        if self.step < n0:
            return
        start, scale = self._start, abs(self._start) or 1.0
        self._best = min(self._best, smooth)
        gain = start - self._best
        lost = gain >= FELL * scale and smooth >= start - LOST * gain
        self._bad = self._bad + 1 if lost else 0
        if self._bad >= self.sustain:
            self._fire(f"the training loss went back to its starting level ({smooth:.4g}, "
                       f"from {start:.4g} down to {self._best:.4g}) and stayed there for "
                       f"{self.sustain} steps, up to step {self.step}")  # fmt: skip
        warmup = None if self.pct_start is None else math.ceil(self.pct_start * self.total)
        # (a warm-up shorter than a few smoothing windows is too short to judge progress)
        if self.step == warmup and warmup >= 4 * self.window and gain < PROGRESS * scale:
            self._fire(f"no progress by the end of the warm-up (step {self.step}): the "
                       f"training loss is at {smooth:.4g}, it started at {start:.4g}")  # fmt: skip


def fit_with_fallbacks(
    learn: Loop,
    fit: Callable[[float, list[Callback]], Any],
    auto: AutoResult,
    total_steps: int,
    pct_start: float | None = 0.25,
    cbs: Sequence[Callback] = (),
    *,
    continues: bool = False,
) -> float:
    """Run ``fit(peak, [guard])`` at ``auto.lr_max``; if the guard fires, put everything
    back and run again at the next lower candidate of ``auto``, and so on. Returns the
    peak the run finished with and records each abandoned attempt in ``auto.rollbacks``
    (its steps added to ``auto.steps_used``). ``fit`` must pass the extra callbacks on to
    ``learn.fit``; a ``fit`` that makes several fits (``fine_tune``) passes them to each,
    and makes no more once the guard has ``fired`` (``fit`` itself returns normally when
    a guard ends it). ``continues``: ``fit`` continues the search's prefix at each peak
    (``auto.prefix(peak)``, as ``fit_auto`` does); the guard is given the prefix's losses
    first and the prefix's steps count as the run's (``AutoResult.reuse``). ``total_steps`` and
    ``pct_start`` are those of the whole attempt (``CollapseGuard``). A callback with a
    ``discard_fit()`` method (``Checkpoint``) is asked to remove what it wrote for an
    abandoned attempt: from ``written[since]`` on, all of the attempt's fits, when it
    keeps a ``written`` list. The lowest candidate runs with a guard that only watches;
    a run that finishes without its training loss ever 5% below its start sets
    ``auto.stalled``, with a warning."""
    assert auto.lr_max is not None
    peak = auto.lr_max
    lower = sorted((c for c in auto.candidates if c < peak * (1 - 1e-9)), reverse=True)
    keepers = list({id(cb): cb for cb in [*learn.cbs, *cbs] if hasattr(cb, "discard_fit")}.values())
    for nxt in lower:
        snap = learner_snapshot(learn)
        # where the attempt's files begin (a Checkpoint's ``written``); None: the last fit's
        marks = [len(cb.written) if hasattr(cb, "written") else None for cb in keepers]
        guard = CollapseGuard(total_steps, pct_start if auto.trained else None)
        start = _continue(auto, peak, guard) if continues else 0
        try:
            fit(peak, [guard])
        except NonFiniteLossError as e:  # NonFiniteGuard stopped it first
            guard.fired = str(e).split(":")[0]  # "non-finite loss (nan) at epoch 0, ..."
        if guard.fired is None:
            _check_progress(auto, guard, peak)
            return peak
        snap.restore()
        for cb, mark in zip(keepers, marks):
            if mark is None:
                cb.discard_fit()
            else:
                cb.discard_fit(since=mark)
        auto.rollbacks.append({"lr_max": peak, "step": guard.step, "reason": guard.fired})
        auto.steps_used += guard.step - start
        log.warning("lr_max=auto: the run at %.3g collapsed (%s); running again at the next "
                    "lower candidate, %.3g", peak, guard.fired, nxt)  # fmt: skip
        peak = nxt
        auto.lr_max = peak
        auto.reason += f"; run again at {peak:.3g}"
    watch = CollapseGuard(total_steps, None, fire=False)  # the lowest: nothing lower
    if continues:
        _continue(auto, peak, watch)
    fit(peak, [watch])
    _check_progress(auto, watch, peak)
    return peak


def _check_progress(auto: AutoResult, guard: CollapseGuard, peak: float) -> None:
    """A run that never trained is said loudly (``AutoResult.stalled``). (A run that
    continues a prefix trained with gradient accumulation is not watched: its losses are
    not one per step.)"""
    if guard.progressed is False:
        auto.stalled = True
        why = ("no peak the search tried trains it with this optimizer" if not auto.trained
               else "the search's probes trained, this run did not")  # fmt: skip
        log.warning("lr_max=auto: the run at %.3g never trained (its training loss never fell "
                    "%.0f%% below %.4g): unless the model was trained already, %s, and this "
                    "result is not what the model can do; try an adaptive optimizer, another "
                    "initialisation or a longer run, or give lr_max", peak, 100 * FELL,
                    guard._start, why)  # fmt: skip


def _continue(auto: AutoResult, peak: float, guard: CollapseGuard | None) -> int:
    """The run at ``peak`` continues its prefix, if the search trained one: its steps
    become the run's, and ``guard`` watches them as the run's first. Returns them."""
    steps = auto.reuse(peak)
    prefix = auto.prefix(peak)
    if guard is not None and prefix is not None and prefix.state is not None and steps:
        losses = prefix.state["recorder"]["losses"]
        if len(losses) == steps:  # one loss per step (no accumulation): watched as run
            guard.replay(losses)
        else:
            guard.step = steps
    return steps


def fit_auto(
    learn: Loop,
    n_epoch: int,
    spec: Callable[[list[float]], Mapping[str, Any]],
    fit: Callable[[list[float], list[Callback], Any], None],
    *,
    budget: float,
    pct_start: float | None,
    moms: tuple[float, float, float] | None,
    wd: float | None,
    cbs: Sequence[Callback] = (),
    resume: Any = None,
) -> None:
    """``fit_one_cycle(lr_max="auto")``'s run: the search (``onecycle.auto.auto_lr_max``),
    then ``fit(peaks, extra_cbs, resume)`` at the pick, with ``fit_with_fallbacks``
    watching; after a search on prefixes (``auto.METHOD = "prefixes"``) the run
    continues the pick's prefix, on the training data less the search's split.

    ``resume``: a checkpoint of this run (``Checkpoint`` writes the search's pick and
    split into it): the run goes on at that pick, on that split, without searching
    again; with no checkpoint there yet, the search runs as for a fresh run."""
    from onecycle import auto as A
    from onecycle.prefixes import validation_split
    from onecycle.resume import find_checkpoint

    if learn.opt is None:
        learn._make_opt([1e-3] * len(learn.param_groups))
    assert learn.opt is not None
    steps = learn.steps_per_epoch(cbs)
    total = n_epoch * steps
    saved = None
    if resume is not None:
        found = find_checkpoint(learn, resume, cbs)
        saved = None if found is None else (found[1].get("config") or {}).get("auto")
        if found is not None and saved is None:
            raise ConfigError("resume", str(found[0]), "a checkpoint of an lr_max='auto' run "
                              "(this one has no search result: give its lr_max)")  # fmt: skip
    ratios = [float(g["lr"]) for g in learn.opt.param_groups]
    data = learn.train_data
    if saved is not None:
        auto = A.AutoResult(float(saved["lr_max"]), f"{saved['lr_max']:.3g}: the search's pick, "
                            f"read from the checkpoint (not searched again)", None,
                            [float(saved["lr_max"])], [], 0.0, total,
                            held_batches=int(saved["held_batches"]),
                            held_samples=int(saved["held_samples"]))  # fmt: skip
        learn.auto_result = auto
        learn.run_config["auto"] = dict(saved)
        if auto.held_batches:
            learn.train_data, _ = validation_split(data, auto.held_batches)
        try:
            fit([auto.lr_max * r / ratios[-1] for r in ratios], [], resume)  # type: ignore[operator]
        finally:
            learn.train_data = data
        return
    auto = A.auto_lr_max(learn, budget=budget, n_epoch=n_epoch, spec=spec, moms=moms, wd=wd,
                         pct_start=pct_start or 0.25, cbs=cbs)  # fmt: skip
    total = auto.total_steps
    learn.auto_result, learn.lr_find_result = auto, auto.range_test
    if auto.lr_max is None:
        raise ConfigError("lr_max", "auto", f"an explicit number: {auto.reason}")
    ratios = auto.range_test.group_ratios if auto.range_test else [r / ratios[-1] for r in ratios]
    learn.run_config["auto"] = {"lr_max": auto.lr_max, "held_batches": auto.held_batches,
                                "held_samples": auto.held_samples}  # fmt: skip
    log.info("lr_max=auto: %s (%.1f%% of the run's steps beyond the run)", auto.reason,
             100 * auto.compute_ratio)  # fmt: skip
    learn.train_data = auto.train_data

    def attempt(peak: float, extra: list[Callback]) -> None:
        learn.run_config["auto"]["lr_max"] = peak
        prefix = auto.prefix(peak)
        fit([peak * r for r in ratios], extra, prefix.state if prefix is not None else None)

    try:
        fit_with_fallbacks(learn, attempt, auto, total, pct_start, cbs, continues=True)
    finally:
        learn.train_data = data
