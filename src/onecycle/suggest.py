"""Reading a range-test curve: which learning rates it supports, and how sure it is.

Every rule works on a *zero-lag* smoothing of the raw losses (the bias-corrected EMA run
forwards, then backwards, with ``beta = 1 - 20/n`` clipped to [0.5, 0.95]). The online
EMA that decides when to stop lags by about ``beta / (1 - beta)`` steps (49 for fastai's
0.98, i.e. several decades of LR in a 100-step exponential sweep), which drags every
rule towards too-large LRs; the zero-lag curve does not. The *analysis window* runs from
``n // 10`` to the divergence: after the loss had clearly fallen below its starting
level, the first raw loss clearly above it (by 3 noise units) that is never followed by
a loss clearly below it again: a spike that recovers is read past.
Before smoothing, losses are capped at twice the starting level (``head + |head|``), so
no outlier leaks backwards into the valley. Each rule returns a ``Suggestion`` whose
``lr`` is None, with the reason, when the curve cannot support it:

- **too short**: fewer than 10 points in the window (raise ``num_it``, lower ``start_lr``);
- **too flat**: the smoothed loss never falls by 0.5% of its starting value (the sweep
  never reached LRs that train: raise ``end_lr`` or ``num_it``);
- **too noisy**: the fall is smaller than twice the step-to-step noise of the raw
  loss (robust estimate: 1.4826 x median |diff| / sqrt 2): larger batches or
  ``accumulate`` help.

The rules:

- ``minimum``: the LR at the lowest smoothed loss, divided by 10 (fastai). None if the
  lowest point is the sweep's last and the loss never diverged: the minimum is out of range.
- ``steep``: the LR where the smoothed loss falls fastest per unit of log-LR (fastai's
  ``steep``; derivatives on log-LR spacing, not index spacing - cf. Lightning #14248).
  Searched up to the minimum.
- ``valley``: fastai's default: the longest decreasing subsequence of the smoothed loss,
  then the point about half-way into it (``start + L/3 + L/6``). fastai runs it on its
  lagging EMA, so its numbers come out larger than ours on the same sweep.
- ``clr_bounds``: Smith's bounds for cyclical LRs: ``lower`` where the loss has clearly
  started to fall (10% of its total fall), ``upper`` where it stops falling (within 5% of
  the total fall from the minimum). ``lr`` is the upper bound.
- **recommended** ``lr_max`` for 1cycle: Smith (arXiv:1803.09820) takes the LR where the
  loss stops falling as 1cycle's maximum, so the recommendation is the LR at the lowest
  smoothed loss, but never more than the LR where the sweep blew up divided by 4 for
  SGD-like optimizers (0.6 decades) or 2.5 for adaptive ones (0.4 decades): 1cycle spends
  a long time near ``lr_max``, and with SGD the bottom of the valley can sit right at the
  cliff. If ``clr_bounds`` has no answer (too short, flat, noisy, still falling at the
  end, too abrupt), none is given.
  docs/lr_find.md reports how well it does against a grid of LRs.

>>> import math
>>> lrs = [10 ** (-5 + 5 * i / 99) for i in range(100)]
>>> loss = [2.3 - 2.0 / (1 + math.exp(-(math.log10(lr) + 2.5) * 3)) for lr in lrs]
>>> loss = [v + (5.0 * (math.log10(lr) + 0.5) ** 2 if lr > 0.3 else 0) for v, lr in zip(loss, lrs)]
>>> a = suggest(lrs, loss, "diverged", adaptive=True)
>>> s, rec = a.suggestions, a.recommended
>>> round(math.log10(s["steep"].lr), 1)
-2.5
>>> [round(math.log10(b), 1) for b in s["clr_bounds"].bounds]
[-3.3, -1.5]
>>> round(math.log10(rec.lr), 1)  # the bottom of the valley, before the rise at 0.3
-0.9
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Analysis", "Suggestion", "suggest", "zero_lag"]

MIN_POINTS = 10
# When a sweep ran to its end, a rise in its last points counts as divergence only if it
# lasts this share of the sweep (at least 3 points); set on the calibration pairs of
# benchmarks/auto_lr/tasks.py.
SUSTAIN = 0.04
FLAT_FRACTION = 0.005
NOISE_RATIO = 2.0
# How far below the LR where the sweep blew up lr_max must stay. SGD's step grows with the
# gradient, so it meets a sharp stability limit (~2/curvature) and the sweep, lagging
# behind momentum, sees the blow-up late; adaptive optimizers normalise their steps.
# Calibrated on MNIST-1D (docs/lr_find.md), checked on Fashion-MNIST.
SAFETY_SGD = 4.0
SAFETY_ADAPTIVE = 2.5


@dataclass(frozen=True)
class Suggestion:
    """One rule's answer: an LR (or None), why, and where on the curve it came from."""

    rule: str
    lr: float | None
    reason: str
    index: int | None = None
    bounds: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "lr": self.lr, "reason": self.reason, "index": self.index,
                "bounds": list(self.bounds) if self.bounds else None}  # fmt: skip


def _none(rule: str, reason: str) -> Suggestion:
    return Suggestion(rule, None, reason)


def _longest_decreasing(s: np.ndarray) -> tuple[int, int]:
    """(start, end) of the longest strictly decreasing subsequence, fastai-style indices."""
    n = len(s)
    length = np.ones(n, dtype=int)
    for i in range(1, n):
        prev = length[:i][s[:i] > s[i]]
        if len(prev):
            length[i] = prev.max() + 1
    end = int(np.argmax(length))
    return max(0, end - int(length[end])), end


def zero_lag(values: Sequence[float], beta: float) -> np.ndarray:
    """Bias-corrected EMA forwards, then backwards: smooth without shifting the curve.

    >>> zero_lag([1.0, 1.0, 1.0], 0.9).round(3).tolist()
    [1.0, 1.0, 1.0]
    """

    def ema(x: np.ndarray) -> np.ndarray:
        out, avg = np.empty_like(x), 0.0
        for i, v in enumerate(x):
            avg = beta * avg + (1 - beta) * v
            out[i] = avg / (1 - beta ** (i + 1))
        return out

    return ema(ema(np.asarray(values, dtype=float))[::-1])[::-1]


@dataclass(frozen=True)
class Analysis:
    """The suggestions, the recommended ``lr_max`` (or None), and the curve they were read
    from: the zero-lag smoothed loss per LR (NaN outside the analysis window)."""

    suggestions: dict[str, Suggestion]
    recommended: Suggestion | None
    curve: list[float]


def suggest(
    lrs: Sequence[float], losses: Sequence[float], stop_reason: str, *, adaptive: bool = False
) -> Analysis:
    """Read a range-test curve: every rule's suggestion and the recommended 1cycle ``lr_max``.

    ``losses`` are the raw losses per LR; a non-finite loss ends the usable curve.
    ``adaptive``: the optimizer normalises its steps (Adam family, RMSprop, Adagrad), which
    allows ``lr_max`` closer to the blow-up (``SAFETY_ADAPTIVE`` instead of ``SAFETY_SGD``).
    """
    safety = SAFETY_ADAPTIVE if adaptive else SAFETY_SGD
    suggestions, recommended, curve = _suggest(lrs, losses, stop_reason, safety)
    full = [math.nan] * len(lrs)
    if curve is not None:
        start, values = curve
        full[start : start + len(values)] = [float(v) for v in values]
    return Analysis(suggestions, recommended, full)


def _suggest(
    lrs: Sequence[float], losses: Sequence[float], stop_reason: str, safety: float
) -> tuple[dict[str, Suggestion], Suggestion | None, tuple[int, np.ndarray] | None]:
    rules = ("valley", "steep", "minimum", "clr_bounds")
    n = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    n = min(n, len(lrs))
    start = max(1, n // 10)
    if n - start < MIN_POINTS:
        why = (f"too short: {max(0, n - start)} usable points (need {MIN_POINTS}); "
               "raise num_it or lower start_lr")  # fmt: skip
        return {r: _none(r, why) for r in rules}, None, None
    raw_all = np.asarray(losses[:n], dtype=float)
    diverged_run = not stop_reason.startswith("completed") or n < len(losses)
    head = float(np.median(raw_all[: max(3, start)]))
    noise = 1.4826 * float(np.median(np.abs(np.diff(raw_all[start:])))) / math.sqrt(2)
    # Cut the divergence off where the loss rose above its start level for good: after it
    # had clearly fallen, the first loss clearly above the start level that is followed
    # by no loss clearly below it again (when the sweep ran to its end, a tail shorter than
    # SUSTAIN of the sweep must be far up: twice the start level). A spike that comes back below the
    # start level is read past: batch-norm nets under SGD catapult up to 4x their start
    # loss over a decade of LR, recover, and blow up only a decade later.
    margin = max(3 * noise, 0.005 * abs(head))
    fell = np.nonzero(raw_all[start:] < head - margin)[0]
    cut = n
    if len(fell):
        above = raw_all > head + margin
        below = raw_all < head - margin
        k = max(3, round(SUSTAIN * n))
        for i in range(start + int(fell[0]), n):
            # a short tail at the end of a completed sweep counts only if it is far up
            far = raw_all[i] > head + abs(head)
            if above[i] and not below[i:].any() and (i + k <= n or diverged_run or far):
                cut = i + 1
                break
    diverged = cut < n or not stop_reason.startswith("completed")
    if cut - start < MIN_POINTS:
        why = (f"too short: the loss diverged {cut - start} points into the window "
               f"(need {MIN_POINTS}); raise num_it or lower start_lr")  # fmt: skip
        return {r: _none(r, why) for r in rules}, None, None
    beta = min(0.95, max(0.5, 1 - 20 / n))
    lr = np.asarray(lrs[start:cut], dtype=float)
    s = zero_lag(np.minimum(raw_all[:cut], head + abs(head)), beta)[start:]
    i_min = int(np.argmin(s))
    fall = float(s[0] - s[i_min])
    if fall < FLAT_FRACTION * max(abs(float(s[0])), 1e-12):
        why = f"too flat: the loss fell {fall:.3g} from {s[0]:.3g} (< {FLAT_FRACTION:.1%}); "
        why += ("then it diverged: no LR of the sweep trains - check the data, labels and "
                "loss, or lower start_lr" if diverged else
                "the sweep never reached LRs that train - raise end_lr or num_it")  # fmt: skip
        return {r: _none(r, why) for r in rules}, None, (start, s)
    if fall < NOISE_RATIO * noise:
        why = (f"too noisy: the loss fell {fall:.3g} but moves {noise:.3g} from step to step; "
               "use larger batches or accumulate")  # fmt: skip
        return {r: _none(r, why) for r in rules}, None, (start, s)

    out: dict[str, Suggestion] = {}
    at_end = i_min == len(s) - 1 and not diverged

    # valley: half-way into the longest decreasing stretch
    v0, v1 = _longest_decreasing(s)
    vi = v0 + int((v1 - v0) / 3) + int((v1 - v0) / 6)
    out["valley"] = Suggestion("valley", float(lr[vi]),
                               f"half-way into the longest decreasing stretch "
                               f"(lr {lr[v0]:.3g} to {lr[v1]:.3g})", start + vi)  # fmt: skip

    # steep: most negative d(loss)/d(log lr), up to the minimum
    logs = np.log(lr)
    if i_min >= 2 and np.all(np.diff(logs[: i_min + 1]) > 0):
        grad = np.gradient(s[: i_min + 1], logs[: i_min + 1])
        gi = int(np.argmin(grad))
        out["steep"] = (
            Suggestion("steep", float(lr[gi]), f"steepest fall: {grad[gi]:.3g} per unit log-LR",
                       start + gi)
            if grad[gi] < 0 else _none("steep", "the loss never falls before its minimum")
        )  # fmt: skip
    else:
        out["steep"] = _none("steep", "the minimum is at the start of the window")

    if at_end:
        why = f"the loss was still falling at the last lr ({lr[-1]:.3g}): raise end_lr"
        out["minimum"] = _none("minimum", why)
        out["clr_bounds"] = _none("clr_bounds", why)
        return out, None, (start, s)
    out["minimum"] = Suggestion("minimum", float(lr[i_min]) / 10,
                                f"lowest smoothed loss {s[i_min]:.3g} at lr {lr[i_min]:.3g}, / 10",
                                start + i_min)  # fmt: skip

    lo = int(np.argmax(s <= s[0] - 0.10 * fall))
    hi = int(np.argmax(s <= s[i_min] + 0.05 * fall))
    if hi <= lo:
        out["clr_bounds"] = _none("clr_bounds", "the loss falls too abruptly to separate bounds")
        return out, None, (start, s)
    out["clr_bounds"] = Suggestion(
        "clr_bounds", float(lr[hi]),
        f"loss starts falling at lr {lr[lo]:.3g}, stops falling at lr {lr[hi]:.3g}",
        start + hi, (float(lr[lo]), float(lr[hi])),
    )  # fmt: skip
    # 1cycle's peak: where the loss stops falling (its smoothed minimum), kept clear of the
    # LR where the sweep blew up.
    bottom = float(lr[i_min])
    why = f"lowest smoothed loss at lr {bottom:.3g}: where the loss stops falling (Smith 2018)"
    rec = Suggestion("recommended", bottom, why, start + i_min)
    if diverged:
        blow_up = float(lrs[cut - 1])
        safe = blow_up / safety
        if bottom > safe:
            idx = int(np.searchsorted(lr, safe))  # lr grows along the sweep
            why = (f"divergence lr {blow_up:.3g} / {safety:g}: the loss's lowest point "
                   f"({bottom:.3g}) sits too close to where training blows up")  # fmt: skip
            rec = Suggestion("recommended", safe, why, start + min(idx, len(lr) - 1))
    return out, rec, (start, s)
