"""Schedules: pure functions of training progress.

A schedule maps progress ``t`` in [0, 1] (0 = the first optimizer step, 1 = the
last) to a value: a learning rate, a momentum, a weight decay. It holds no
counter, so the same schedule gives the same value for the same ``t`` however
often, in whatever order, and after any resume. Values of ``t`` outside [0, 1]
are clamped: a schedule never extrapolates.

Every schedule is a small frozen dataclass: it pickles, compares equal and
prints its parameters. Building blocks (``const``, ``lin``, ``cos``, ``exp``,
``poly``) compose with ``join``; they live in ``onecycle.shapes`` and this module
re-exports them, so every schedule imports from here. The method's schedules, defined
here, are built from them:

- ``one_cycle`` / ``one_cycle_moms``: Smith's 1cycle policy in fastai's
  parametrisation (arXiv:1803.09820; fastai ``fit_one_cycle``), two- or three-phase.
- ``triangular``, ``triangular2``, ``exp_range``: cyclical learning rates
  (Smith, arXiv:1506.01186), with ``step_size`` in iterations as in the paper.
- ``step_decay``, ``exp_decay``, ``time_decay``: the classic fixed schedules.
- ``cos`` (cosine annealing), ``sgdr`` (warm restarts, arXiv:1608.03983), ``warmup``.

>>> s = one_cycle(0.1)
>>> round(s(0.0), 6), round(s(0.25), 6), s(1.0)
(0.004, 0.1, 1e-06)
>>> sample(lin(0.0, 1.0), 5)
[0.0, 0.25, 0.5, 0.75, 1.0]

Only the standard library is imported here (and ``onecycle.shapes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from onecycle.errors import ConfigError, check_finite, check_int, check_positive, check_range
from onecycle.shapes import (
    Const,
    Cos,
    Cyclic,
    Exp,
    Hyperbolic,
    Join,
    Lin,
    Poly,
    Schedule,
    Sqrt,
    StepDecay,
    _clamp,
    _Shape,
    const,
    cos,
    exp,
    exp_decay,
    join,
    lin,
    poly,
    progress,
    sample,
    step_decay,
    time_decay,
)

__all__ = [
    "Const",
    "Cos",
    "Cyclic",
    "Exp",
    "Extended",
    "Hyperbolic",
    "Join",
    "Lin",
    "Poly",
    "Schedule",
    "Sqrt",
    "StepDecay",
    "const",
    "cos",
    "exp",
    "exp_decay",
    "exp_range",
    "extend",
    "join",
    "lin",
    "one_cycle",
    "one_cycle_moms",
    "poly",
    "progress",
    "sample",
    "sgdr",
    "step_decay",
    "time_decay",
    "triangular",
    "triangular2",
    "warmup",
    "wsd",
]

Anneal = Literal["cos", "linear"]

_NORMAL, _FLOAT_MAX = 2.2250738585072014e-308, 1.7976931348623157e308  # float64 range


def _anneal(kind: str) -> type[Cos] | type[Lin]:
    if kind == "cos":
        return Cos
    if kind == "linear":
        return Lin
    raise ConfigError("anneal", kind, "'cos' or 'linear'")


def _check_pct_start(pct_start: float, three_phase: bool) -> float:
    if not isinstance(three_phase, bool):  # "no" is truthy: it would build three phases
        raise ConfigError("three_phase", three_phase, "True or False")
    pct = check_range("pct_start", pct_start, 0.0, 1.0, lo_open=True, hi_open=True)
    if three_phase and pct > 0.5:
        raise ConfigError("pct_start", pct_start, "a number in (0, 0.5] when three_phase=True")
    return pct


def one_cycle(
    lr_max: float,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    anneal: Anneal = "cos",
    three_phase: bool = False,
) -> Join:
    """Smith's 1cycle learning rate, in fastai's parametrisation.

    Two-phase (default, fastai ``fit_one_cycle``): from ``lr_max / div`` up to
    ``lr_max`` over the first ``pct_start`` of training, then down to
    ``lr_max / div_final``. Three-phase (``three_phase=True``, Smith 2018): up
    over ``pct_start``, back down to ``lr_max / div`` over the next ``pct_start``,
    then annihilation to ``lr_max / div_final`` over the rest.

    Args:
        lr_max: peak learning rate, > 0 (find it with the range test).
        div: start LR is ``lr_max / div``; >= 1 (the cycle starts at or below its
            peak). fastai and torch use 25.
        div_final: end LR is ``lr_max / div_final``; >= 1. fastai uses 1e5. torch's
            ``final_div_factor`` is relative to the *start* LR, so torch's default end
            (``max_lr / 2.5e5``) is ``div_final = div * final_div_factor``.
        pct_start: fraction of training spent warming up, in (0, 1); (0, 0.5] if three-phase.
            fastai 0.25, torch 0.3.
        anneal: ``"cos"`` (fastai, torch default) or ``"linear"`` (Smith's papers, speed records).
        three_phase: Smith's paper form instead of fastai's.

    >>> s = one_cycle(1.0, div=10.0, div_final=100.0, pct_start=0.5, anneal="linear")
    >>> s(0.0), s(0.5), s(1.0)
    (0.1, 1.0, 0.01)
    >>> s3 = one_cycle(1.0, div=10.0, div_final=100.0, pct_start=0.25, three_phase=True)
    >>> s3(0.25), s3(0.5), s3(1.0)
    (1.0, 0.1, 0.01)
    """
    lr_max = check_positive("lr_max", lr_max)
    div = check_finite("div", div)
    if div < 1.0:  # div=0.5 would start the cycle above its peak
        raise ConfigError("div", div, "a finite number >= 1 (start LR = lr_max/div)")
    div_final = check_finite("div_final", div_final)
    if div_final < 1.0:
        raise ConfigError(
            "div_final", div_final, "a finite number >= 1 (end LR = lr_max/div_final)"
        )
    pct = _check_pct_start(pct_start, three_phase)
    a = _anneal(anneal)
    lo, hi, end = lr_max / div, lr_max, lr_max / div_final
    for name, value, v in (("div", div, lo), ("div_final", div_final, end)):
        if not _NORMAL <= v <= _FLOAT_MAX:  # lr_max/div underflows to 0 or overflows
            raise ConfigError(name, value, f"a value that keeps lr_max/{name} a positive "
                              f"normal float (lr_max={lr_max!r})")  # fmt: skip
    if not three_phase:
        return join([a(lo, hi), a(hi, end)], [pct, 1.0 - pct])
    if pct == 0.5:  # no room left for the annihilation phase
        return join([a(lo, hi), a(hi, lo)], [0.5, 0.5])
    return join([a(lo, hi), a(hi, lo), a(lo, end)], [pct, pct, 1.0 - 2.0 * pct])


def one_cycle_moms(
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
    pct_start: float = 0.25,
    anneal: Anneal = "cos",
    three_phase: bool = False,
) -> Join:
    """The momentum that goes with ``one_cycle``: it moves against the learning rate.

    ``moms = (start, middle, end)``: from ``start`` down to ``middle`` while the LR
    warms up, then back to ``end``. Three-phase: ``middle`` back to ``end`` over the
    second phase, then held at ``end`` (as torch's ``three_phase``). Applies to SGD's
    ``momentum`` or Adam's ``beta1`` (the Scheduler translates).

    >>> s = one_cycle_moms(pct_start=0.25)
    >>> s(0.0), s(0.25), s(1.0)
    (0.95, 0.85, 0.95)
    """
    if isinstance(moms, (str, bytes)) or not isinstance(moms, Sequence) or len(moms) != 3:
        raise ConfigError("moms", moms, "three momentum values (start, middle, end)")
    m0, m1, m2 = (check_range("moms", m, 0.0, 1.0) for m in moms)
    pct = _check_pct_start(pct_start, three_phase)
    a = _anneal(anneal)
    if not three_phase:
        return join([a(m0, m1), a(m1, m2)], [pct, 1.0 - pct])
    if pct == 0.5:
        return join([a(m0, m1), a(m1, m2)], [0.5, 0.5])
    return join([a(m0, m1), a(m1, m2), Const(m2)], [pct, pct, 1.0 - 2.0 * pct])


def _clr(
    base_lr: float, max_lr: float, step_size: int, total_steps: int, mode: str, gamma: float
) -> Cyclic:
    base_lr = check_positive("base_lr", base_lr)
    max_lr = check_positive("max_lr", max_lr)
    if max_lr <= base_lr:
        raise ConfigError("max_lr", max_lr, f"a number > base_lr={base_lr!r}")
    return Cyclic(base_lr, max_lr, step_size, total_steps, mode, gamma)  # type: ignore[arg-type]


def triangular(base_lr: float, max_lr: float, step_size: int, total_steps: int) -> Cyclic:
    """CLR ``triangular``: linear from ``base_lr`` to ``max_lr`` over ``step_size`` iterations
    and back, repeated (Smith 2017). Smith suggests ``step_size`` of 2-10 epochs of iterations.

    >>> s = triangular(0.1, 0.5, step_size=2, total_steps=9)
    >>> [round(s(i / 8), 3) for i in range(9)]
    [0.1, 0.3, 0.5, 0.3, 0.1, 0.3, 0.5, 0.3, 0.1]
    """
    return _clr(base_lr, max_lr, step_size, total_steps, "triangular", 1.0)


def triangular2(base_lr: float, max_lr: float, step_size: int, total_steps: int) -> Cyclic:
    """CLR ``triangular2``: as ``triangular``, the amplitude halving after each cycle.

    >>> s = triangular2(0.1, 0.5, step_size=2, total_steps=9)
    >>> [round(s(i / 8), 3) for i in range(9)]
    [0.1, 0.3, 0.5, 0.3, 0.1, 0.2, 0.3, 0.2, 0.1]
    """
    return _clr(base_lr, max_lr, step_size, total_steps, "triangular2", 1.0)


def exp_range(
    base_lr: float, max_lr: float, step_size: int, total_steps: int, gamma: float = 0.99994
) -> Cyclic:
    """CLR ``exp_range``: the amplitude multiplied by ``gamma ** iteration``, ``gamma`` in (0, 1].

    >>> s = exp_range(0.1, 0.5, step_size=2, total_steps=9, gamma=0.5)
    >>> round(s(2 / 8), 4)  # iteration 2: 0.1 + 0.4 * 0.5**2
    0.2
    """
    return _clr(base_lr, max_lr, step_size, total_steps, "exp_range", gamma)


def sgdr(lr_max: float, lr_min: float = 0.0, n_cycles: int = 3, cycle_mult: float = 2.0) -> Join:
    """SGDR (Loshchilov & Hutter, arXiv:1608.03983): cosine from ``lr_max`` to ``lr_min``,
    restarted ``n_cycles`` times, each cycle ``cycle_mult`` times longer than the last.

    >>> s = sgdr(1.0, 0.0, n_cycles=2, cycle_mult=1.0)
    >>> s(0.0), s(0.25), s(0.5)
    (1.0, 0.5, 1.0)
    """
    lr_max = check_positive("lr_max", lr_max)
    lr_min = check_finite("lr_min", lr_min)
    if not 0.0 <= lr_min < lr_max:
        raise ConfigError("lr_min", lr_min, f"a number in [0, lr_max={lr_max!r})")
    n = check_int("n_cycles", n_cycles)
    mult = check_range("cycle_mult", cycle_mult, 1.0, 100.0)
    lengths = [mult**k for k in range(n)]
    total = sum(lengths)
    return join([Cos(lr_max, lr_min)] * n, [x / total for x in lengths])


def warmup(schedule: Schedule, pct: float = 0.05, start: float = 0.0) -> Join:
    """Linear warm-up from ``start`` to ``schedule``'s first value over the first ``pct``
    of training, then ``schedule`` compressed into the rest.

    >>> s = warmup(cos(1.0, 0.0), pct=0.5)
    >>> s(0.25), s(0.5), s(1.0)
    (0.5, 1.0, 0.0)
    """
    pct = check_range("pct", pct, 0.0, 1.0, lo_open=True, hi_open=True)
    start = check_finite("start", start)
    if not callable(schedule):
        raise ConfigError("schedule", schedule, "a schedule (a callable of progress)")
    return join([Lin(start, schedule(0.0)), schedule], [pct, 1.0 - pct])


Cooldown = Literal["linear", "cos", "1-sqrt"]


def wsd(
    lr_max: float,
    warmup: float = 0.05,
    cooldown_pct: float = 0.2,
    cooldown: Cooldown = "1-sqrt",
    start: float = 0.0,
    end: float = 0.0,
) -> Join:
    """Warmup-stable-decay (WSD, the "trapezoid"): linear from ``start`` to ``lr_max`` over
    the first ``warmup`` of training, flat, then down to ``end`` over the last
    ``cooldown_pct`` along ``cooldown``: ``"linear"``, ``"cos"`` or ``"1-sqrt"``
    (``lr_max * (1 - sqrt(t))``, the best of the three in Hägele et al., arXiv:2405.18392).
    The same shape as transformers' ``get_wsd_schedule`` and timm's ``WSDLRScheduler``,
    over training progress instead of step counts. ``warmup`` may be 0.

    >>> s = wsd(1.0, warmup=0.25, cooldown_pct=0.25, cooldown="linear")
    >>> s(0.0), s(0.125), s(0.5), s(0.875), s(1.0)
    (0.0, 0.5, 1.0, 0.5, 0.0)
    """
    lr_max = check_positive("lr_max", lr_max)
    warmup = check_range("warmup", warmup, 0.0, 1.0, hi_open=True)
    cooldown_pct = check_range("cooldown_pct", cooldown_pct, 0.0, 1.0, lo_open=True)
    if warmup + cooldown_pct > 1.0 + 1e-12:
        raise ConfigError(
            "cooldown_pct", cooldown_pct, f"a fraction <= 1 - warmup ({1 - warmup:g})"
        )
    shapes = {"linear": Lin, "cos": Cos, "1-sqrt": Sqrt}
    if cooldown not in shapes:
        raise ConfigError("cooldown", cooldown, "'linear', 'cos' or '1-sqrt'")
    start, end = check_finite("start", start), check_finite("end", end)
    pieces: list[tuple[Schedule, float]] = [
        (Lin(start, lr_max), warmup),
        (Const(lr_max), 1.0 - warmup - cooldown_pct),
        (shapes[cooldown](lr_max, end), cooldown_pct),
    ]
    kept = [(sch, p) for sch, p in pieces if p > 1e-12]
    total = sum(p for _, p in kept)
    return join([sch for sch, _ in kept], [p / total for _, p in kept])


@dataclass(frozen=True)
class Extended(_Shape):
    """``schedule`` (planned over ``old_total`` steps) run for ``new_total`` steps instead:
    steps ``0..at`` unchanged, then the value of step ``at`` held for the
    ``new_total - old_total`` extra steps, then the rest of the plan as it was. Built by
    ``extend``. Over progress ``u`` of the new run: step ``j = u * (new_total - 1)``."""

    schedule: Schedule
    old_total: int
    new_total: int
    at: int

    def __post_init__(self) -> None:
        old = check_int("old_total", self.old_total)
        new = check_int("new_total", self.new_total)
        if new < old:
            raise ConfigError("new_total", new, f"an integer >= old_total={old} (an extension)")
        at = check_int("at", self.at, minimum=0)
        if at > old - 1:
            raise ConfigError("at", at, f"a step of the planned run, 0 .. {old - 1}")
        if not callable(self.schedule):
            raise ConfigError("schedule", self.schedule, "a schedule (a callable of progress)")

    def __call__(self, u: float) -> float:
        j = _clamp(u) * (self.new_total - 1)
        if abs(j - round(j)) < 1e-9:
            j = float(round(j))
        extra = self.new_total - self.old_total
        i = j if j <= self.at else (self.at if j <= self.at + extra else j - extra)
        return self.schedule(i / max(1, self.old_total - 1))


def extend(schedule: Schedule, old_total: int, new_total: int, at: int) -> Extended:
    """Lengthen a run that was planned for ``old_total`` steps to ``new_total``, from step
    ``at`` (where it is now, or the checkpoint it resumes from), without restarting its
    warm-up: the extra steps hold the value of step ``at``, then the rest of the plan runs
    as it would have. For WSD with ``at`` before the cooldown this is a longer stable phase
    and the same cooldown; for 1cycle, a longer stay at the LR it had at ``at`` and the
    same annealing. A deliberate departure from Smith's fixed-length cycle.

    >>> s = extend(lin(0.0, 3.0), old_total=4, new_total=6, at=1)  # plan: 0, 1, 2, 3
    >>> sample(s, 6)
    [0.0, 1.0, 1.0, 1.0, 2.0, 3.0]
    """
    return Extended(schedule, old_total, new_total, at)
