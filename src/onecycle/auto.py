"""``lr_max="auto"`` and ``wd="auto"``: the range test, read and then checked by short runs.

Three steps before the run, all through the Learner's own loop (``onecycle.probes`` runs them; this
module reads them and chooses), so that they apply exactly the update ``fit`` trains
with (decoupled weight decay and its no-decay groups, the callbacks marked
``affects_update``: clipping, accumulation, mixed precision), and all restored afterwards
(weights, optimizer, random state, loader position, the Learner's loop state):

1. **The sweep** (``lr_sweep``): Smith's range test, with the momentum held at the value
   1cycle uses at its peak LR (``moms[1]``, 0.85 by default: 1cycle's momentum is lowest
   exactly where its LR is highest, and the sweep is read for that peak).
2. **Candidates** (``candidates``): points of the lattice 10**(k/2) from half the LR where
   the loss diverged *for good* (a rise that never comes back below the start level, not
   a catapult that recovers: batch-norm nets under SGD spike and recover a decade or
   more below where they really blow up) down to the LR of the lowest smoothed loss.
3. **Probes** (``probe``): a short 1cycle at each candidate, from the same weights, the
   same batches in the same order, scored by the loss on held-back training batches that
   no probe trains on; ``lr_max`` is the lowest, moved towards the neighbour that probed
   next best (``between``: the vertex of a parabola in log LR, within half a lattice
   step; the closer that neighbour's loss, or the worse the other's, the further).
4. **Fallback** (``onecycle.fallback``, run by ``fit_one_cycle``, ``fine_tune`` and the
   CLI): if the run at that peak collapses (its training loss back at its starting level
   and staying there, or not finite), everything is put back and the run starts again at
   the next lower candidate. A short probe cannot see an instability that shows only after a
   long time near the peak; the run can, and loses only the steps before it showed.

The whole step is budgeted as a fraction of the optimizer steps of the run it serves
(``budget``, default ``BUDGET``); ``AutoResult.compute_ratio`` reports what it cost. When the
sweep cannot be read (too flat, too noisy, too short) there is no recommendation and
the reason says why, as before: probes never turn a bad curve into a confident number.

``wd_range_test`` and ``momentum_range_test`` are Smith's other two sweeps
(arXiv:1803.09820, section 4): short 1cycle runs at the chosen ``lr_max`` with a few
weight decays or momentum ranges, compared on held-back loss.

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(2048, 8, generator=g); y = (x[:, :4].sum(1) > 0).long()
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
>>> learn = Learner(model, Loader(x, y, 32), loss_func=torch.nn.functional.cross_entropy)
>>> before = learn.model[0].weight.clone()
>>> auto = auto_lr_max(learn, total_steps=1000)
>>> torch.equal(learn.model[0].weight, before), [round(c, 4) for c in auto.candidates]
(True, [1.0, 0.3162, 0.1])
>>> auto.compute_ratio <= BUDGET
True
>>> [round(p.loss, 3) for p in auto.probes]  # held-back loss of each candidate's probe
[0.173, 0.043, 0.091]
>>> round(auto.lr_max, 3)  # 0.316 probed best, moved towards 0.1 (``between``)
0.243
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onecycle.callbacks import Callback
from onecycle.errors import ConfigError, check_int, check_range
from onecycle.probes import (
    EVAL_COST,
    ProbeResult,
    held_count,
    lr_sweep,
    probe,
    probe_cost,
)
from onecycle.range_test import RangeTestResult

if TYPE_CHECKING:
    from onecycle.learner import Learner

__all__ = [
    "AutoResult",
    "ProbeResult",
    "auto_lr_max",
    "between",
    "candidates",
    "lr_sweep",
    "momentum_range_test",
    "probe",
    "wd_range_test",
]

log = logging.getLogger(__name__)

# The sweep that locates the candidates: 8.6 points per decade from 1e-6 to 10.
START_LR, END_LR, SWEEP_STEPS = 1e-6, 10.0, 60
# Probes: PROBE_FRAC of the run's steps each, all within BUDGET x the run's steps
# (sweep included).
PROBE_FRAC = 0.04
BUDGET = 0.3
# ...or this many step-equivalents, whichever is more: a short run (a few hundred steps,
# seconds) still gets probes of MIN_PROBE_STEPS, instead of the sweep's reading alone.
MIN_BUDGET_STEPS = 200
# The highest candidate: the LR where the loss diverged for good, / DIV_TOP. 1cycle holds its
# peak for a long time; a sweep that passes an LR in one step tolerates more than that.
DIV_TOP = 2.0
MAX_CANDIDATES = 3  # one more when the curve's minimum sits below the third
# Shortest probe worth running (optimizer steps): fewer say nothing about a 1cycle.
MIN_PROBE_STEPS = 8
# A probe "trains" if it ends at least this fraction below the untrained held-back loss.
TRAINS = 0.01


@dataclass
class AutoResult:
    """What ``lr_max="auto"`` (or ``wd="auto"``) saw and chose, and what it cost.

    ``lr_max`` is None, with ``reason``, when the sweep supports no recommendation.
    ``steps_used`` counts optimizer steps of the sweep and the probes plus held-back
    forward passes (a third of a step each); ``compute_ratio`` divides by the
    ``total_steps`` of the run it serves. ``rollbacks``: runs abandoned because they
    collapsed (``onecycle.fallback``), each ``{"lr_max", "step", "reason"}``; their steps
    are in ``steps_used`` and ``lr_max`` is then the peak the run finished with.
    """

    lr_max: float | None
    reason: str
    range_test: RangeTestResult | None
    candidates: list[float]
    probes: list[ProbeResult]
    steps_used: float
    total_steps: int
    wd: float | None = None
    rollbacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def compute_ratio(self) -> float:
        return self.steps_used / max(1, self.total_steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr_max": self.lr_max, "wd": self.wd, "reason": self.reason,
            "candidates": self.candidates, "probes": [p.to_dict() for p in self.probes],
            "steps_used": self.steps_used, "total_steps": self.total_steps,
            "compute_ratio": self.compute_ratio, "rollbacks": self.rollbacks,
            "range_test": self.range_test.to_dict() if self.range_test else None,
        }  # fmt: skip


def candidates(res: RangeTestResult) -> list[float]:
    """Candidate 1cycle peaks read from a sweep, largest first: the ``MAX_CANDIDATES``
    largest points of the fixed lattice ``10**(k/2)`` (x sqrt(10) apart, as the grids
    users try by hand) at or below half the LR where the loss diverged for good, and
    at least one at or below the LR of the lowest smoothed loss.

    A fixed lattice makes the answer repeatable: two seeds whose sweeps differ a little
    propose the same candidates. Empty when the sweep shows no usable window (too short)
    or neither fell nor diverged (nothing in it trains or blows up).
    """
    curve = res.analysis_curve
    valid = [i for i, v in enumerate(curve) if v == v]
    if len(valid) < 2:
        return []
    diverged = valid[-1] < len(res.lrs) - 1 or not res.stop_reason.startswith("completed")
    if not diverged and (res.recommended is None or res.recommended.lr is None):
        return []
    i_min = min(valid, key=lambda i: curve[i])
    bottom = res.lrs[i_min]
    top = res.lrs[valid[-1]]  # the analysis window ends where the loss diverged for good
    k = math.floor(2 * math.log10(max(top / DIV_TOP, bottom)) + 1e-9)
    out = [10 ** (k / 2)]
    while len(out) < MAX_CANDIDATES or out[-1] > bottom * (1 + 1e-9):
        out.append(10 ** ((k - len(out)) / 2))
        if len(out) >= MAX_CANDIDATES + 1:  # a curve whose bottom sits far below its top
            break
    return out


def auto_lr_max(
    learn: Learner,
    total_steps: int,
    *,
    budget: float = BUDGET,
    probe_frac: float = PROBE_FRAC,
    num_it: int = SWEEP_STEPS,
    moms: tuple[float, float, float] | None = None,
    wd: float | None = None,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    cbs: Sequence[Callback] = (),
) -> AutoResult:
    """``lr_max`` for a 1cycle run of ``total_steps`` optimizer steps.

    1. Sweep ``num_it`` steps from ``START_LR`` to ``END_LR`` (``lr_sweep``).
    2. Candidates from the curve (``candidates``).
    3. Rank: a probe of ``P = probe_frac * total_steps`` steps at each candidate.
    The lowest held-back loss wins, moved between it and its neighbours (``between``);
    ``onecycle.fallback`` takes the next lower candidate if the run at it collapses.

    At most ``budget * total_steps`` step-equivalents in all (or ``MIN_BUDGET_STEPS``,
    whichever is more): ``P`` shrinks to fit, and when even ``MIN_PROBE_STEPS`` does not
    fit, the sweep's own recommendation is used (the reason says so).
    """
    total_steps = check_int("total_steps", total_steps)
    budget = check_range("budget", budget, 0.0, math.inf, lo_open=True, hi_open=True)
    probe_frac = check_range("probe_frac", probe_frac, 0.0, 1.0, lo_open=True)
    allowed = max(budget * total_steps, MIN_BUDGET_STEPS)
    res = lr_sweep(learn, START_LR, END_LR, num_it, moms=moms, wd=wd, cbs=cbs)
    used = float(len(res.lrs))
    cands = candidates(res)
    reasons = "; ".join(sorted({s.reason for s in res.suggestions.values() if s.lr is None}))
    if not cands:
        return AutoResult(None, reasons or res.stop_reason, res, [], [], used, total_steps)
    held = EVAL_COST * held_count(learn)
    room = allowed - used - (len(cands) + 1) * held  # the untrained model's score too
    steps = min(max(MIN_PROBE_STEPS, round(probe_frac * total_steps)),
                int(room / len(cands)))  # fmt: skip
    if steps < MIN_PROBE_STEPS:
        if res.recommended is None or res.recommended.lr is None:
            why = f"{reasons}; no room for probes in {budget:g} x {total_steps} steps"
            return AutoResult(None, why, res, cands, [], used, total_steps)
        why = (f"sweep only: a budget of {budget:g} x {total_steps} steps leaves no room for "
               f"probes; {res.recommended.reason}")  # fmt: skip
        return AutoResult(res.recommended.lr, why, res, cands, [], used, total_steps)
    ratios = res.group_ratios

    def run(lr: float, n: int) -> ProbeResult:
        nonlocal used
        p = probe(learn, [lr * r for r in ratios], n, moms=moms, wd=wd, pct_start=pct_start,
                  div=div, div_final=div_final, cbs=cbs)  # fmt: skip
        used += probe_cost(learn, n)
        probes.append(p)
        return p

    probes: list[ProbeResult] = []
    start = probe(learn, cands[-1], 0, cbs=cbs)  # the held-back loss before any training
    used += EVAL_COST * held_count(learn)
    short = {lr: run(lr, steps) for lr in cands}
    best = min(cands, key=lambda lr: short[lr].loss)
    if math.isinf(short[best].loss):
        return AutoResult(None, "every probe diverged", res, cands, probes, used, total_steps)
    if not short[best].loss < start.loss - TRAINS * abs(start.loss):
        why = (f"no candidate trains: the best probe ({best:.3g}) ends at held-back loss "
               f"{short[best].loss:.4g}, the model as it is now has {start.loss:.4g} (a model "
               "already trained cannot be improved by a short probe: give lr_max)")  # fmt: skip
        return AutoResult(None, why, res, cands, probes, used, total_steps)
    why = (f"lowest held-back loss ({short[best].loss:.4g}) of {len(cands)} probes of "
           f"{steps} steps")  # fmt: skip
    peak = between(cands, [short[c].loss for c in cands])
    why = (f"{peak:.3g}: {why} at {best:.3g}, moved towards the neighbour that probed next "
           "best" if peak != best else f"{best:.3g}: {why}")  # fmt: skip
    return AutoResult(peak, why, res, cands, probes, used, total_steps)


def between(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The peak the probes point to, between lattice points: the LR of the lowest loss
    moved to the vertex, in log LR, of the parabola through it and its two neighbours.

    When two neighbours probe almost alike, which of them wins flips from seed to seed
    (a x3.16 jump); the vertex moves smoothly from one to the other instead. With the
    lowest loss in the middle the vertex stays within half a lattice step of it, so it
    never leaves the bracket the probes measured. It moves towards the better neighbour,
    the further the closer that neighbour's loss is to the best, or the worse the other
    neighbour's is: a probe that nearly diverged above the best pushes the pick down.
    A best at either end of ``lrs``, or a non-finite neighbour, leaves the best as it is;
    NaN counts as infinite, and of equal losses the first wins (as in ``auto_lr_max``).
    ``lrs`` are the candidates, in their order: evenly spaced in log LR, strictly
    monotone.

    >>> round(between([1.0, 0.316, 0.1], [2.0, 1.0, 1.1]), 3)  # 0.1 nearly as good
    0.197
    >>> round(between([1.0, 0.316, 0.1], [9.0, 1.0, 1.5]), 3)  # 1.0 far worse: down too
    0.19
    >>> between([1.0, 0.316, 0.1], [2.0, 1.0, 0.9])  # the lowest candidate wins: no bracket
    0.1
    """
    if not lrs or len(lrs) != len(losses):
        raise ConfigError("losses", len(losses), f"one loss per LR ({len(lrs)})")
    steps = [b / a for a, b in itertools.pairwise(lrs)]
    if not (all(r < 1 for r in steps) or all(r > 1 for r in steps)):
        raise ConfigError("lrs", list(lrs), "strictly increasing or decreasing LRs")
    ys = [v if v == v else math.inf for v in losses]  # NaN: as bad as diverged
    i = min(range(len(lrs)), key=lambda j: ys[j])
    if not 0 < i < len(lrs) - 1 or not all(map(math.isfinite, ys[i - 1 : i + 2])):
        return lrs[i]
    (xa, ya), (xb, yb), (xc, yc) = ((math.log10(lrs[j]), ys[j]) for j in (i - 1, i, i + 1))
    den = (xb - xa) * (yb - yc) - (xb - xc) * (yb - ya)
    if den == 0:  # no curvature to read: keep the best
        return lrs[i]
    x = xb - 0.5 * ((xb - xa) ** 2 * (yb - yc) - (xb - xc) ** 2 * (yb - ya)) / den
    if x == xb:  # symmetric neighbours: the best itself, exactly
        return lrs[i]
    lo, hi = sorted((xa, xc))
    return 10 ** min(max(x, (lo + xb) / 2), (hi + xb) / 2)


def _pick(
    learn: Learner, values: Sequence[Any], run: Any, what: str
) -> tuple[Any, list[ProbeResult], float]:
    results = [run(v) for v in values]
    used = sum(probe_cost(learn, r.steps) for r in results)
    best = min(range(len(values)), key=lambda i: results[i].loss)
    if math.isinf(results[best].loss):
        raise ConfigError(what, "auto", f"an explicit value: every {what} probe diverged")
    return values[best], results, used


def wd_range_test(
    learn: Learner,
    lr_max: float | Sequence[float],
    total_steps: int,
    values: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    *,
    budget: float = 0.1,
    moms: tuple[float, float, float] | None = None,
    cbs: Sequence[Callback] = (),
) -> AutoResult:
    """Smith's weight-decay sweep: a short 1cycle at ``lr_max`` for each weight decay in
    ``values``, ranked by held-back loss; the lowest wins (ties go to the first given).
    Each probe gets an equal share of ``budget`` x ``total_steps``."""
    total_steps = check_int("total_steps", total_steps)
    if not values:
        raise ConfigError("values", values, "at least one weight decay")
    steps = max(MIN_PROBE_STEPS, int(budget * total_steps / len(values)
                                      - EVAL_COST * held_count(learn)))  # fmt: skip
    wd, probes, used = _pick(
        learn, list(values),
        lambda v: probe(learn, lr_max, steps, moms=moms, wd=float(v), cbs=cbs),
        "wd",
    )  # fmt: skip
    why = f"lowest held-back loss of wd in {list(values)} after {steps} steps at lr_max"
    peak = lr_max if isinstance(lr_max, float) else float(list(lr_max)[-1])
    return AutoResult(peak, why, None, [], probes, used, total_steps, wd=float(wd))


def momentum_range_test(
    learn: Learner,
    lr_max: float | Sequence[float],
    total_steps: int,
    values: Sequence[tuple[float, float, float]] = (
        (0.99, 0.9, 0.99),
        (0.95, 0.85, 0.95),
        (0.9, 0.8, 0.9),
        (0.85, 0.75, 0.85),
    ),
    *,
    budget: float = 0.1,
    wd: float | None = None,
    cbs: Sequence[Callback] = (),
) -> tuple[tuple[float, float, float], AutoResult]:
    """Smith's momentum sweep: a short 1cycle at ``lr_max`` for each ``moms`` range,
    ranked by held-back loss. Returns the winning ``moms`` and the probes."""
    total_steps = check_int("total_steps", total_steps)
    if not values:
        raise ConfigError("values", values, "at least one (start, middle, end) momentum")
    steps = max(MIN_PROBE_STEPS, int(budget * total_steps / len(values)
                                      - EVAL_COST * held_count(learn)))  # fmt: skip
    m, probes, used = _pick(
        learn, [tuple(v) for v in values],
        lambda v: probe(learn, lr_max, steps, moms=v, wd=wd, cbs=cbs),
        "moms",
    )  # fmt: skip
    why = f"lowest held-back loss of moms in {[list(v) for v in values]} after {steps} steps"
    peak = lr_max if isinstance(lr_max, float) else float(list(lr_max)[-1])
    return m, AutoResult(peak, why, None, [], probes, used, total_steps)
