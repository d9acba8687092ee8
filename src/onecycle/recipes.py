"""The method's fits: ``fit`` plus a schedule, and the range test that chooses its LR.

Each function takes the loop (``onecycle.loop.Loop``) first and is also a method of the
``Learner`` (``Learner.fit_one_cycle = fit_one_cycle``): ``learn.fit_one_cycle(4, 0.1)`` is
``fit_one_cycle(learn, 4, 0.1)``. None of them touches the loop: they build schedules
(``onecycle.schedules``), pick values (``onecycle.auto``) and call ``learn.fit``.

- ``fit_one_cycle``: Smith's 1cycle, with ``lr_max="auto"`` and ``wd="auto"``;
- ``fit_clr``: cyclical learning rates; ``fit_sgdr``: warm restarts;
- ``fine_tune``: fastai's frozen-head-then-unfreeze recipe;
- ``lr_find``, ``auto_lr_max``, ``auto_wd``: the range tests, through the Learner's loop.

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(1024, 2); y = (x[:, 0] > 0).long()
>>> ce = torch.nn.functional.cross_entropy
>>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 64), loss_func=ce)
>>> learn.steps_per_epoch()
16
>>> fit_one_cycle(learn, 1, lr_max=0.1)  # the same as learn.fit_one_cycle(1, lr_max=0.1)
>>> learn.recorder.lrs[0], round(max(learn.recorder.lrs), 3)  # lr_max / 25 up to lr_max
(0.004, 0.1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from onecycle import schedules as S
from onecycle.callbacks import Callback, GradientAccumulation
from onecycle.errors import ConfigError, check_int, check_positive
from onecycle.params import LR, LRMax
from onecycle.scheduler import ScheduleSpec, momentum_key

if TYPE_CHECKING:
    from onecycle.loop import Loop
    from onecycle.range_test import RangeTestResult

__all__ = [
    "auto_lr_max", "auto_wd", "fine_tune", "fit_clr", "fit_one_cycle", "fit_sgdr", "lr_find",
    "steps_per_epoch",
]  # fmt: skip

log = logging.getLogger("onecycle.learner")  # these are the Learner's methods


def moms_schedules(
    learn: Loop, moms: tuple[float, float, float] | None, make: Callable[[tuple], ScheduleSpec]
) -> dict[str, ScheduleSpec]:
    if learn.opt is None:
        learn._make_opt([1e-3] * len(learn.param_groups))
    assert learn.opt is not None
    if moms is None and momentum_key(learn.opt) is None:
        log.info("optimizer has no momentum: momentum is not cycled")
        return {}
    return {"momentum": make(tuple(moms if moms is not None else learn.moms))}


def lr_find(
    learn: Loop,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    mode: Literal["exp", "linear"] = "exp",
    smooth: float = 0.98,
    stop_div: bool = True,
    div_factor: float = 4.0,
    valid_batches: Iterable[Any] | None = None,
    metric: Callable[[Any, Any], torch.Tensor] | None = None,
    accumulate: int | None = None,
    *,
    moms: tuple[float, float, float] | None = None,
    wd: float | None = None,
    cbs: Sequence[Callback] = (),
) -> RangeTestResult:
    """The LR range test on this learner, through its own training loop: every step
    applies exactly what ``fit`` applies (decoupled ``wd`` and its no-decay groups,
    the callbacks marked ``affects_update`` in ``learn.cbs`` and ``cbs``: clipping,
    accumulation, mixed precision), with momentum (or beta1) held at ``moms[1]``
    (default the Learner's, 0.85): the value 1cycle uses when its LR peaks, which is
    what the sweep is read for. Everything is restored afterwards; the result is also
    kept in ``learn.lr_find_result``.

    The sweep's LRs apply to the last param group; the others keep their ratio to it.
    ``valid_batches``: the validation loss (and ``metric``) after every step. Options
    as ``onecycle.range_test``.
    """
    from onecycle.auto import lr_sweep
    from onecycle.range_test import check_sweep

    check_sweep(start_lr, end_lr, num_it, mode, smooth, div_factor)  # before any change
    if accumulate is not None:
        accumulate = check_int("accumulate", accumulate)
    if learn.opt is None:
        learn._make_opt([float(start_lr)] * len(learn.param_groups))
    extra = list(cbs)
    if accumulate is not None and accumulate > 1:
        extra.append(GradientAccumulation(accumulate))
    learn.lr_find_result = lr_sweep(
        learn, start_lr, end_lr, num_it, mode, smooth, stop_div, div_factor,
        moms=moms, wd=wd, cbs=extra, valid_batches=valid_batches, metric=metric,
    )  # fmt: skip
    return learn.lr_find_result


def steps_per_epoch(learn: Loop, cbs: Sequence[Callback] = ()) -> int:
    """Optimizer steps in one epoch of ``train_data`` (``learn.steps_per_epoch(cbs)``, kept
    here as a function for the callers that used it before it moved to ``Loop``)."""
    return learn.steps_per_epoch(cbs)


def auto_lr_max(
    learn: Loop,
    total_steps: int | None = None,
    *,
    budget: float | None = None,
    moms: tuple[float, float, float] | None = None,
    wd: float | None = None,
    pct_start: float = 0.25,
    cbs: Sequence[Callback] = (),
) -> list[float]:
    """``lr_max`` per param group for a 1cycle run of ``total_steps`` optimizer steps
    (default: one epoch), chosen on prefixes of that run (``onecycle.auto``), at most
    ``budget`` x ``total_steps`` steps beyond it (default ``auto.BUDGET``). For a run
    made elsewhere (a trainer's own loop, CLR, ``fine_tune``): nothing here continues
    the pick's prefix, so its steps count as the search's (``fit_one_cycle(lr_max=
    "auto")`` continues it). The details are kept in ``learn.auto_result`` and the sweep
    in ``learn.lr_find_result``.

    Raises ``ConfigError`` naming the reason when every candidate diverged.
    """
    from onecycle import auto as A

    total = total_steps if total_steps is not None else learn.steps_per_epoch(cbs)
    res = A.auto_lr_max(learn, total, budget=A.BUDGET if budget is None else budget, moms=moms,
                        wd=wd, pct_start=pct_start, cbs=cbs)  # fmt: skip
    res.reuse(None)  # nothing continues the pick's prefix here
    learn.auto_result = res
    learn.lr_find_result = res.range_test
    if res.lr_max is None:
        raise ConfigError(
            "lr_max", "auto",
            f"an explicit number: the search found no lr_max that trains ({res.reason})",
        )  # fmt: skip
    log.info("lr_max=auto: %.3g (%s; %.1f%% of the run's steps)", res.lr_max, res.reason,
             100 * res.compute_ratio)  # fmt: skip
    ratios = res.range_test.group_ratios if res.range_test else [1.0]
    return [res.lr_max * r for r in ratios]


def auto_wd(
    learn: Loop,
    lr_max: LR,
    total_steps: int,
    values: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    *,
    budget: float = 0.1,
    moms: tuple[float, float, float] | None = None,
    cbs: Sequence[Callback] = (),
) -> float:
    """Smith's weight-decay test at ``lr_max`` (``onecycle.auto.wd_range_test``): the
    weight decay in ``values`` whose short 1cycle probe ends with the lowest held-back
    loss. Kept in ``learn.auto_wd_result``."""
    from onecycle.auto import wd_range_test

    res = wd_range_test(learn, learn.group_values(lr_max, "lr_max"), total_steps, values,
                        budget=budget, moms=moms, cbs=cbs)  # fmt: skip
    learn.auto_wd_result = res
    assert res.wd is not None
    log.info("wd=auto: %g (%s)", res.wd, res.reason)
    return res.wd


def fit_one_cycle(
    learn: Loop,
    n_epoch: int,
    lr_max: LRMax = 1e-2,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: tuple[float, float, float] | None = None,
    wd: float | Literal["auto"] | None = None,
    cbs: Sequence[Callback] = (),
    start_epoch: int = 0,
    *,
    anneal: S.Anneal = "cos",
    three_phase: bool = False,
    resume: str | Path | None = None,
    extend: bool = False,
    budget: float | str | None = None,
    auto_budget: float | None = None,
) -> None:
    """Smith's 1cycle policy (fastai's ``fit_one_cycle``): ``fit`` plus a schedule.

    The LR of each group rises from ``lr_max/div`` to ``lr_max`` over the first
    ``pct_start`` of all steps, then anneals to ``lr_max/div_final``; momentum (or
    Adam's beta1) moves against it through ``moms`` (default: the Learner's,
    0.95-0.85-0.95). ``lr_max`` may be a slice or a sequence (discriminative LRs), or
    ``"auto"``: a search first (``onecycle.auto``: a range test places candidate peaks,
    short 1cycle probes rank them on samples held back from training), then the run at
    the pick, with the next lower candidate run instead if it collapses
    (``onecycle.fallback``). The search spends at most ``auto_budget`` (default 0.3) x
    the run's steps beyond the run; ``learn.auto_result`` says what it saw, chose and
    spent; a checkpoint of the run holds the pick, so ``resume`` never searches again
    (with ``auto.METHOD = "prefixes"`` it searches on prefixes of this very run and the
    run continues the pick's). ``wd="auto"``: Smith's weight-decay test at that
    ``lr_max`` (another tenth at most). See ``onecycle.schedules.one_cycle`` for
    ``anneal`` and ``three_phase``, and ``fit`` for ``resume`` and ``extend`` (lengthen a
    shorter run of the same fit from its checkpoint, without a second warm-up).

    ``budget``: a wall-clock time (seconds, or ``"90s"``, ``"3m"``, ``"1.5h"``) instead of
    a number of steps: the cycle's progress is time used over the budget, the steps per
    second measured as it goes, and the fit ends on time with the LR at
    ``lr_max/div_final``; ``n_epoch`` is then an upper bound (``onecycle.budget``: what is
    counted, and what is reproducible). Not with ``"auto"``, whose range test and probes
    are sized in the run's steps.

    >>> import torch
    >>> from onecycle import Callback, Learner
    >>> from onecycle.data import Loader
    >>> class Clock(Callback):  # a fake clock: each batch takes 0.5 s
    ...     now = 0.0
    ...     def __call__(self): return self.now
    ...     def before_batch(self, learn): self.now += 0.5
    >>> x = torch.randn(256, 2); y = (x[:, 0] > 0).long()
    >>> clock = Clock()
    >>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 32), cbs=[clock],
    ...                 loss_func=torch.nn.functional.cross_entropy)
    >>> learn.clock = clock
    >>> learn.fit_one_cycle(100, lr_max=0.1, budget="10s")  # 100 epochs: an upper bound
    >>> len(learn.recorder.lrs), learn.recorder.lrs[-1], clock.now  # 20 steps of 0.5 s
    (20, 1e-06, 10.0)
    """
    auto_lr = isinstance(lr_max, str) and lr_max == "auto"
    if isinstance(lr_max, str) and not auto_lr:
        raise ConfigError("lr_max", lr_max, "a number, a slice, a sequence, or 'auto'")
    if isinstance(wd, str) and wd != "auto":
        raise ConfigError("wd", wd, "a number >= 0, None, or 'auto'")
    if budget is not None and (auto_lr or wd == "auto"):
        name = "lr_max" if auto_lr else "wd"
        raise ConfigError(name, "auto", "a number with a time budget: the range test and "
                          "probes are sized in the run's optimizer steps, which a budget "
                          "learns only as it runs (run lr_find first)")  # fmt: skip
    if auto_budget is not None and not auto_lr:
        raise ConfigError("auto_budget", auto_budget, "None unless lr_max='auto'")
    if auto_lr and start_epoch:
        raise ConfigError("start_epoch", start_epoch, "0 with lr_max='auto' (its search plans "
                          "the whole run; resume a stopped run with resume=)")  # fmt: skip
    if auto_lr and extend:
        raise ConfigError("extend", extend, "False with lr_max='auto' (lengthen a run with "
                          "the lr_max it chose)")  # fmt: skip
    if wd == "auto" and resume is not None:
        raise ConfigError("wd", "auto", "a number when resuming (the run chose one)")
    if auto_lr or wd == "auto":  # the search is sized in the run's steps: a real count
        n_epoch = check_int("n_epoch", n_epoch)

    def spec(lrs: list[float]) -> dict[str, ScheduleSpec]:
        out: dict[str, ScheduleSpec] = {
            "lr": [S.one_cycle(v, div, div_final, pct_start, anneal, three_phase) for v in lrs]
        }
        out.update(moms_schedules(
            learn, moms, lambda m: S.one_cycle_moms(m, pct_start, anneal, three_phase)  # type: ignore[arg-type]
        ))  # fmt: skip
        return out

    def run(lrs: list[float], extra: Sequence[Callback] = (), resume: Any = resume) -> None:
        learn.fit(n_epoch, lrs, schedules=spec(lrs), wd=wd, cbs=[*cbs, *extra],
                  start_epoch=start_epoch, resume=resume, extend=extend, budget=budget)  # fmt: skip

    if auto_lr and wd != "auto":  # the search's pick continues its prefix as the run
        from onecycle import auto as A
        from onecycle.fallback import fit_auto

        learn.auto_result = None
        fit_auto(learn, n_epoch, spec, run, budget=A.BUDGET if auto_budget is None else
                 auto_budget, pct_start=pct_start, moms=moms, wd=wd, cbs=cbs,
                 resume=resume)  # fmt: skip
        return
    learn.run_config.pop("auto", None)
    if auto_lr or wd == "auto":
        total = (n_epoch - start_epoch) * learn.steps_per_epoch(cbs)
    if auto_lr:  # with wd="auto" the run's wd is chosen after the LR: no prefix to continue
        lrs = auto_lr_max(learn, total, moms=moms, budget=auto_budget, pct_start=pct_start,
                          cbs=cbs)  # fmt: skip
    else:
        lrs = learn.group_values(lr_max, "lr_max")  # type: ignore[arg-type]
    if wd == "auto":
        wd = auto_wd(learn, lrs, total, moms=moms, cbs=cbs)
    if auto_lr:
        from onecycle.fallback import fit_with_fallbacks

        assert learn.auto_result is not None
        ratios = [v / lrs[-1] for v in lrs]
        fit_with_fallbacks(learn, lambda peak, extra: run([peak * r for r in ratios], extra),
                           learn.auto_result, total, pct_start, cbs)  # fmt: skip
    else:
        run(lrs)


def fit_clr(
    learn: Loop,
    n_epoch: int,
    base_lr: float,
    max_lr: float,
    step_size: int | None = None,
    mode: str = "triangular",
    gamma: float = 0.99994,
    moms: tuple[float, float] | None = None,
    wd: float | None = None,
    cbs: Sequence[Callback] = (),
    resume: str | Path | None = None,
) -> None:
    """Smith's cyclical learning rates (arXiv:1506.01186) between ``base_lr`` and ``max_lr``.

    ``step_size`` is half a cycle in optimizer steps (default: 2 epochs' worth, the low
    end of Smith's 2-10 epochs). ``mode``: ``triangular``, ``triangular2`` or
    ``exp_range`` (amplitude times ``gamma ** step``). ``moms=(hi, lo)`` cycles the
    momentum against the LR; default: momentum left as the optimizer has it.
    """
    makers = {"triangular": S.triangular, "triangular2": S.triangular2}
    if mode not in (*makers, "exp_range"):
        raise ConfigError("mode", mode, "'triangular', 'triangular2' or 'exp_range'")
    if moms is not None and (len(moms) != 2):
        raise ConfigError("moms", moms, "two values (hi, lo) or None")

    def spec(total: int) -> dict[str, ScheduleSpec]:
        step = step_size if step_size is not None else max(1, 2 * total // n_epoch)
        if mode == "exp_range":
            lr = S.exp_range(base_lr, max_lr, step, total, gamma)
        else:
            lr = makers[mode](base_lr, max_lr, step, total)
        out: dict[str, ScheduleSpec] = {"lr": lr}
        if moms is not None:
            out["momentum"] = S.Cyclic(moms[0], moms[1], step, total, lr.mode, lr.gamma)
        return out

    learn.fit(n_epoch, max_lr, schedules=spec, wd=wd, cbs=cbs, resume=resume)


def fit_sgdr(
    learn: Loop,
    n_cycles: int,
    cycle_len: int,
    lr_max: float = 1e-2,
    cycle_mult: int = 2,
    wd: float | None = None,
    cbs: Sequence[Callback] = (),
    resume: str | Path | None = None,
) -> None:
    """SGDR (arXiv:1608.03983): ``n_cycles`` cosine anneals from ``lr_max`` to 0, the
    first ``cycle_len`` epochs long, each next one ``cycle_mult`` times longer."""
    n_cycles = check_int("n_cycles", n_cycles)
    cycle_len = check_int("cycle_len", cycle_len)
    cycle_mult = check_int("cycle_mult", cycle_mult)
    n_epoch = sum(cycle_len * cycle_mult**k for k in range(n_cycles))
    spec = {"lr": S.sgdr(lr_max, 0.0, n_cycles, float(cycle_mult))}
    learn.fit(n_epoch, lr_max, schedules=spec, wd=wd, cbs=cbs, resume=resume)


def fine_tune(
    learn: Loop,
    epochs: int,
    base_lr: float | Literal["auto"] = 2e-3,
    freeze_epochs: int = 1,
    lr_mult: float = 100.0,
    pct_start: float = 0.3,
    div: float = 5.0,
    auto_budget: float | None = None,
    **kwargs: Any,
) -> None:
    """fastai's transfer-learning recipe: train the head frozen for ``freeze_epochs``
    (1cycle to ``base_lr``), then unfreeze and train ``epochs`` with discriminative LRs
    ``slice(base_lr/2/lr_mult, base_lr/2)``. ``base_lr="auto"``: chosen for the frozen
    phase by ``auto_lr_max`` (sweep and probes on the frozen model, budgeted against
    both phases' steps: at most ``auto_budget``, default 0.3, of them); both phases are
    then watched as one run, and if it collapses in either (``onecycle.fallback``)
    everything is put back and both run again from the start with ``base_lr`` at the
    next lower candidate (``learn.auto_result.rollbacks``). ``kwargs`` go to both
    ``fit_one_cycle`` calls."""
    if kwargs.get("budget") is not None:  # each of the two fits would get all of it
        raise ConfigError("budget", kwargs["budget"], "None in fine_tune: call fit_one_cycle "
                          "with a budget for each phase")  # fmt: skip
    epochs = check_int("epochs", epochs)
    freeze_epochs = check_int("freeze_epochs", freeze_epochs)
    lr_mult = check_positive("lr_mult", lr_mult)
    if lr_mult < 1:
        raise ConfigError("lr_mult", lr_mult, "a number >= 1 (body LR = head LR / lr_mult)")
    S.one_cycle(1.0, div, pct_start=pct_start)  # refuse a bad div/pct_start before training
    frozen_pct = 0.99  # the frozen phase: nearly all warm-up (fastai's)
    if base_lr == "auto" and kwargs.get("resume") is not None:  # a new pick is not the run's
        raise ConfigError("base_lr", "auto", "a number when resuming (the run chose one)")
    if auto_budget is not None and base_lr != "auto":
        raise ConfigError("auto_budget", auto_budget, "None unless base_lr='auto'")
    cbs: Sequence[Callback] = kwargs.pop("cbs", ())
    learn.freeze()
    total = None  # the run's optimizer steps, with base_lr="auto"
    if isinstance(base_lr, str):
        if base_lr != "auto":
            raise ConfigError("base_lr", base_lr, "a number > 0 or 'auto'")
        if learn.opt is None:
            learn._make_opt([1e-3] * len(learn.param_groups))
        assert learn.opt is not None
        for g, v in zip(learn.opt.param_groups, learn.group_values(slice(1.0))):
            g["lr"] = v  # the sweep keeps these ratios: slice(base_lr) as trained below
        total = (freeze_epochs + epochs) * learn.steps_per_epoch(cbs)
        budget = None if auto_budget is None else check_positive("auto_budget", auto_budget)
        base_lr = auto_lr_max(learn, total, pct_start=frozen_pct, moms=kwargs.get("moms"),
                              cbs=cbs, budget=budget)[-1]  # fmt: skip
    base_lr = check_positive("base_lr", base_lr)

    def run(base_lr: float, extra: Sequence[Callback] = ()) -> None:
        learn.freeze()  # again when run again after the unfrozen phase collapsed
        fit_one_cycle(learn, freeze_epochs, slice(base_lr), pct_start=frozen_pct,
                      cbs=[*cbs, *extra], **kwargs)  # fmt: skip
        if any(getattr(cb, "fired", None) for cb in extra):  # a CollapseGuard ended it
            return  # fit_with_fallbacks runs both phases again, lower
        head = base_lr / 2
        learn.unfreeze()
        fit_one_cycle(learn, epochs, slice(head / lr_mult, head), pct_start=pct_start,
                      div=div, cbs=[*cbs, *extra], **kwargs)  # fmt: skip

    if total is None:
        run(base_lr)
        return
    from onecycle.fallback import fit_with_fallbacks

    assert learn.auto_result is not None
    # the guard's warm-up (where it checks for progress) is the frozen phase's
    warmup = frozen_pct * freeze_epochs / (freeze_epochs + epochs)
    fit_with_fallbacks(learn, run, learn.auto_result, total, warmup, cbs)
