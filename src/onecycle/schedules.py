"""Schedules: pure functions of training progress.

A schedule maps progress ``t`` in [0, 1] (0 = the first optimizer step, 1 = the
last) to a value: a learning rate, a momentum, a weight decay. It holds no
counter, so the same schedule gives the same value for the same ``t`` however
often, in whatever order, and after any resume. Values of ``t`` outside [0, 1]
are clamped: a schedule never extrapolates.

Every schedule is a small frozen dataclass: it pickles, compares equal and
prints its parameters. Building blocks (``const``, ``lin``, ``cos``, ``exp``,
``poly``) compose with ``join``; the method's schedules are built from them:

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

Only the standard library is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from onecycle.errors import ConfigError, check_finite, check_int, check_positive, check_range

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


@runtime_checkable
class Schedule(Protocol):
    """Anything that maps progress ``t`` in [0, 1] to a float."""

    def __call__(self, t: float) -> float: ...


class _Shape:
    """What every schedule class here shares: in a notebook, a picture of its shape over a
    run (``_repr_html_``, an SVG of 200 steps), above its ``repr``."""

    def _repr_html_(self) -> str:
        from onecycle.svg import curves_html

        return curves_html([("", sample(self, 200))], repr(self))  # type: ignore[arg-type]


def _clamp(t: float) -> float:
    return 0.0 if t < 0.0 else 1.0 if t > 1.0 else float(t)


def progress(step: int, total_steps: int) -> float:
    """Progress of optimizer step ``step`` (0-based) in a run of ``total_steps`` steps.

    Step 0 is ``t = 0`` and the last step, ``total_steps - 1``, is ``t = 1``, so a
    run starts exactly at a schedule's start value and ends exactly at its end
    value. Steps past the end are held at ``t = 1``.

    >>> [progress(i, 5) for i in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if total_steps <= 1:
        return 0.0
    return min(step, total_steps - 1) / (total_steps - 1)


def sample(schedule: Schedule, n: int) -> list[float]:
    """The values ``schedule`` takes at each of ``n`` optimizer steps: a preview, no optimizer.

    >>> [round(v, 4) for v in sample(one_cycle(1.0, pct_start=0.5), 5)]
    [0.04, 0.52, 1.0, 0.5, 0.0]
    """
    n = check_int("n", n)
    return [float(schedule(progress(i, n))) for i in range(n)]


# --- building blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Const(_Shape):
    """The same value at every step.

    >>> const(0.9)(0.3)
    0.9
    """

    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_finite("value", self.value))

    def __call__(self, t: float) -> float:
        return self.value


@dataclass(frozen=True)
class Lin(_Shape):
    """Linear from ``start`` (t=0) to ``end`` (t=1).

    >>> lin(1.0, 3.0)(0.5)
    2.0
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_finite("start", self.start))
        object.__setattr__(self, "end", check_finite("end", self.end))

    def __call__(self, t: float) -> float:
        t = _clamp(t)
        # This form is exact at both ends: t=1 gives `end`, not `start + (end - start)`.
        return self.start * (1.0 - t) + self.end * t


@dataclass(frozen=True)
class Cos(_Shape):
    """Half a cosine from ``start`` (t=0) to ``end`` (t=1): flat at both ends.

    >>> cos(1.0, 0.0)(0.5)
    0.5
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_finite("start", self.start))
        object.__setattr__(self, "end", check_finite("end", self.end))

    def __call__(self, t: float) -> float:
        w = (1.0 + math.cos(math.pi * _clamp(t))) / 2.0  # 1 at t=0, 0 at t=1
        return self.start * w + self.end * (1.0 - w)


@dataclass(frozen=True)
class Sqrt(_Shape):
    """From ``start`` to ``end`` along ``sqrt(t)``: fast at first, then slower. From a peak to
    0 it is the "1-sqrt" cooldown, ``peak * (1 - sqrt(t))`` (Hägele et al. 2024).

    >>> Sqrt(1.0, 0.0)(0.25)
    0.5
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_finite("start", self.start))
        object.__setattr__(self, "end", check_finite("end", self.end))

    def __call__(self, t: float) -> float:
        return self.end + (self.start - self.end) * (1.0 - math.sqrt(_clamp(t)))


@dataclass(frozen=True)
class Exp(_Shape):
    """Geometric from ``start`` to ``end`` (both > 0): a straight line on a log scale.

    >>> round(exp(1e-7, 10.0)(0.5), 12), exp(1e-7, 10.0)(1.0)
    (0.001, 10.0)
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_positive("start", self.start))
        object.__setattr__(self, "end", check_positive("end", self.end))

    def __call__(self, t: float) -> float:
        t = _clamp(t)
        # Exact at both ends (x ** 0 == 1), so a sweep 1e-7 -> 10 ends on 10.
        return self.start ** (1.0 - t) * self.end**t


@dataclass(frozen=True)
class Poly(_Shape):
    """Polynomial decay ``end + (start - end) * (1 - t) ** power``; ``power=1`` is linear.

    >>> poly(1.0, 0.0, 2.0)(0.5)
    0.25
    """

    start: float
    end: float
    power: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_finite("start", self.start))
        object.__setattr__(self, "end", check_finite("end", self.end))
        object.__setattr__(self, "power", check_positive("power", self.power))

    def __call__(self, t: float) -> float:
        return self.end + (self.start - self.end) * (1.0 - _clamp(t)) ** self.power


@dataclass(frozen=True)
class Join(_Shape):
    """Schedules run one after another, schedule ``k`` over a fraction ``pcts[k]`` of training.

    Each piece sees its own progress from 0 to 1. ``pcts`` must be positive and sum to 1.
    At a boundary the later piece's start value is used.

    >>> s = join([lin(0.0, 1.0), const(1.0)], [0.25, 0.75])
    >>> s(0.125), s(0.5)
    (0.5, 1.0)
    """

    schedules: tuple[Schedule, ...]
    pcts: tuple[float, ...]
    _bounds: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        scheds, pcts = tuple(self.schedules), tuple(self.pcts)
        if not scheds or not all(callable(s) for s in scheds):
            raise ConfigError("schedules", self.schedules, "a non-empty sequence of schedules")
        if len(pcts) != len(scheds):
            raise ConfigError("pcts", self.pcts, f"{len(scheds)} fractions, one per schedule")
        pcts = tuple(check_range("pcts", p, 0.0, 1.0, lo_open=True) for p in pcts)
        if abs(sum(pcts) - 1.0) > 1e-9:
            raise ConfigError("pcts", self.pcts, "fractions that sum to 1")
        bounds, acc = [], 0.0
        for p in pcts[:-1]:
            acc += p
            bounds.append(acc)
        object.__setattr__(self, "schedules", scheds)
        object.__setattr__(self, "pcts", pcts)
        object.__setattr__(self, "_bounds", tuple(bounds))

    def __call__(self, t: float) -> float:
        t = _clamp(t)
        start = 0.0
        for sched, end, pct in zip(self.schedules, self._bounds, self.pcts):
            if t < end:
                return sched((t - start) / pct)
            start = end
        return self.schedules[-1]((t - start) / self.pcts[-1])


@dataclass(frozen=True)
class Hyperbolic(_Shape):
    """Time-based decay ``start / (1 + k t)``, with ``k`` chosen so that t=1 gives ``end``.

    >>> time_decay(1.0, 0.5)(0.5)  # k = 1
    0.6666666666666666
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_positive("start", self.start))
        object.__setattr__(self, "end", check_positive("end", self.end))

    def __call__(self, t: float) -> float:
        k = self.start / self.end - 1.0
        return self.start / (1.0 + k * _clamp(t))


@dataclass(frozen=True)
class StepDecay(_Shape):
    """``start`` multiplied by ``gamma`` at each milestone (fractions of training) passed.

    >>> s = step_decay(0.1, gamma=0.1, milestones=(0.5, 0.75))
    >>> s(0.4), round(s(0.5), 6), round(s(0.9), 6)
    (0.1, 0.01, 0.001)
    """

    start: float
    gamma: float = 0.1
    milestones: tuple[float, ...] = (0.5, 0.75)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_positive("start", self.start))
        object.__setattr__(self, "gamma", check_positive("gamma", self.gamma))
        ms = tuple(check_range("milestones", m, 0.0, 1.0, lo_open=True) for m in self.milestones)
        if list(ms) != sorted(set(ms)):
            raise ConfigError("milestones", self.milestones, "strictly increasing fractions")
        object.__setattr__(self, "milestones", ms)

    def __call__(self, t: float) -> float:
        t = _clamp(t)
        return self.start * self.gamma ** sum(1 for m in self.milestones if t >= m)


@dataclass(frozen=True)
class Cyclic(_Shape):
    """Smith's cyclical schedule in iterations: from ``start`` to ``peak`` and back.

    One cycle is ``step_size`` iterations towards ``peak`` and ``step_size_down``
    (default ``step_size``) back. Progress ``t`` maps to iteration
    ``t * (total_steps - 1)``. ``mode`` scales the amplitude: ``triangular`` keeps it,
    ``triangular2`` halves it each cycle, ``exp_range`` multiplies it by
    ``gamma ** iteration``. For momentum, pass ``start`` > ``peak``: it moves
    against the LR. Use the factories ``triangular``/``triangular2``/``exp_range``.
    """

    start: float
    peak: float
    step_size: int
    total_steps: int
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: float = 1.0
    step_size_down: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", check_finite("start", self.start))
        object.__setattr__(self, "peak", check_finite("peak", self.peak))
        object.__setattr__(self, "step_size", check_int("step_size", self.step_size))
        object.__setattr__(self, "total_steps", check_int("total_steps", self.total_steps))
        if self.step_size_down is not None:
            down = check_int("step_size_down", self.step_size_down)
            object.__setattr__(self, "step_size_down", down)
        if self.mode not in ("triangular", "triangular2", "exp_range"):
            raise ConfigError("mode", self.mode, "'triangular', 'triangular2' or 'exp_range'")
        gamma = check_range("gamma", self.gamma, 0.0, 1.0, lo_open=True)
        object.__setattr__(self, "gamma", gamma)

    def __call__(self, t: float) -> float:
        it = _clamp(t) * (self.total_steps - 1)
        if abs(it - round(it)) < 1e-9:  # land exactly on integer steps
            it = float(round(it))
        up = self.step_size
        size = up + (self.step_size_down if self.step_size_down is not None else up)
        cycle = math.floor(1.0 + it / size)
        x = 1.0 + it / size - cycle
        ratio = up / size
        frac = x / ratio if x <= ratio else (x - 1.0) / (ratio - 1.0)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 0.5 ** (cycle - 1)  # underflows to 0 after ~1,000 cycles, never overflows
        else:
            scale = self.gamma**it
        return self.start + (self.peak - self.start) * frac * scale


# Lower-case names read as a small algebra: join([lin(a, b), cos(b, c)], [0.3, 0.7]).
const = Const
lin = Lin
cos = Cos
exp = Exp
poly = Poly
time_decay = Hyperbolic
step_decay = StepDecay


def join(schedules: Sequence[Schedule], pcts: Sequence[float]) -> Join:
    """Run ``schedules`` one after another over fractions ``pcts`` of training (see ``Join``)."""
    return Join(tuple(schedules), tuple(pcts))


def exp_decay(start: float, end: float) -> Exp:
    """Exponential decay ``start * exp(-k t)`` reaching ``end`` at t=1 (same as ``exp``).

    Keras-style ``lr0 * exp(-k * iteration)`` over ``T`` steps is
    ``exp_decay(lr0, lr0 * math.exp(-k * (T - 1)))``.

    >>> round(exp_decay(1.0, 0.01)(0.5), 12)
    0.1
    """
    return Exp(start, end)


# --- the method's schedules ---------------------------------------------------------------------


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
