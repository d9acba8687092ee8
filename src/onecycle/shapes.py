"""Shapes: the building blocks every schedule is made of.

A schedule maps progress ``t`` in [0, 1] (0 = the first optimizer step, 1 = the
last) to a value: a learning rate, a momentum, a weight decay. It holds no
counter, so the same schedule gives the same value for the same ``t`` however
often, in whatever order, and after any resume. Values of ``t`` outside [0, 1]
are clamped: a schedule never extrapolates.

Here are the ``Schedule`` protocol, ``progress`` and ``sample``, and the shapes, each a
small frozen dataclass that pickles, compares equal and prints its parameters:
``const``, ``lin``, ``cos``, ``exp``, ``poly``, ``Sqrt``, ``time_decay``, ``step_decay``
and ``Cyclic`` (Smith's cyclical shape), composed one after another with ``join``. The
method's schedules built from them (``one_cycle``, CLR, SGDR, WSD, ``warmup``,
``extend``) are in ``onecycle.schedules``, which re-exports every name here: import
from there.

>>> s = join([lin(0.0, 1.0), cos(1.0, 0.0)], [0.5, 0.5])
>>> sample(s, 5)
[0.0, 0.5, 1.0, 0.5, 0.0]

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
    "join",
    "lin",
    "poly",
    "progress",
    "sample",
    "step_decay",
    "time_decay",
]


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

    >>> [round(v, 4) for v in sample(cos(1.0, 0.0), 5)]
    [1.0, 0.8536, 0.5, 0.1464, 0.0]
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
        last = self.start * self.gamma ** len(ms)  # the value after every milestone
        if not (math.isfinite(last) and last > 0):
            raise ConfigError("gamma", self.gamma, f"a factor that keeps start={self.start:g} "
                              f"finite and positive over {len(ms)} milestone(s)")  # fmt: skip

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
