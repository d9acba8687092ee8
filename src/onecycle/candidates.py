"""The auto search's vocabulary: where candidate peaks come from, and what a search chose.

``lr_max="auto"`` (``onecycle.auto``) places candidates on a fixed lattice of peaks
``10**(k/2)`` (``lattice``) inside the range test's window (``candidates``), ranks them
(by probes, or by prefixes of the run: ``onecycle.prefix_search``), and may place its pick
between two lattice points (``between``). ``AutoResult`` is what every search returns:
the pick, why, what it tried and what it cost; Smith's weight-decay and momentum sweeps
(``onecycle.sweeps``) return one too.

>>> lattice(0.5, 3)  # the largest lattice point at or below 0.5, then down
[0.31622776601683794, 0.1, 0.03162277660168379]
>>> sweep_steps(1000), sweep_steps(50)  # the sweep within what a budget allows
(60, 0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onecycle.errors import ConfigError
from onecycle.prefixes import Prefix
from onecycle.probes import ProbeResult
from onecycle.range_test import RangeTestResult

__all__ = [
    "MAX_CANDIDATES", "MIN_PROBE_STEPS", "TRAINS", "AutoResult", "between", "candidates",
    "lattice", "sweep_steps",
]  # fmt: skip

# The sweep that locates the candidates: 8.6 points per decade from 1e-6 to 10, or fewer
# steps when the budget is small (at most SWEEP_SHARE of it; none under MIN_SWEEP steps).
START_LR, END_LR, SWEEP_STEPS, MIN_SWEEP, SWEEP_SHARE = 1e-6, 10.0, 60, 20, 0.25
MAX_CANDIDATES = 4
"""Candidates a search ranks at most (the prefixes' first rung, the probes' window)."""
# The highest candidate: the LR where the sweep diverged for good, / DIV_TOP.
DIV_TOP = 2.0
# The sweep's window: this many lattice points from the top (one more to reach its minimum).
WINDOW = 3
TRAINS = 0.01
"""A candidate "trains" if its score ends at least this fraction below the untrained one."""
MIN_PROBE_STEPS = 8
"""The shortest probe worth running (optimizer steps), in the LR search and in Smith's
weight-decay and momentum sweeps."""


@dataclass
class AutoResult:
    """What ``lr_max="auto"`` (or ``wd="auto"``) saw and chose, and what it cost.

    ``lr_max`` is None, with ``reason``, only when every candidate diverged. ``prefixes``:
    each candidate's prefix (its steps, its branch scores per rung, its state in memory);
    ``rungs``: the prefix lengths scored; ``held_samples``: the validation split's size
    (0: scored on ``valid_data`` or training batches, said in ``reason``).
    ``steps_used`` counts what the search spent beyond the run: optimizer steps of the
    sweep, of every prefix the run does not continue and of every branch, and held-back
    forward passes (a third of a step per batch); ``compute_ratio`` divides by the
    ``total_steps`` of the run it serves. ``rollbacks``: runs abandoned because they
    collapsed (``onecycle.fallback``), each ``{"lr_max", "step", "reason"}``.
    ``trained``: False when no candidate trained in the search (a plateau): the run is
    then not expected to make progress by the end of its warm-up. ``stalled``: the run
    never trained (its training loss never fell 5% below its start; a warning said so):
    its result is not what the model can do.
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
    prefixes: list[Prefix] = field(default_factory=list, repr=False)
    rungs: list[int] = field(default_factory=list)
    budget: float | None = None
    held_samples: int = 0
    held_batches: int = 0
    start_loss: float | None = None
    reused_steps: int = 0
    trained: bool = True
    stalled: bool = False
    train_data: Any = field(default=None, repr=False, compare=False)

    @property
    def compute_ratio(self) -> float:
        return self.steps_used / max(1, self.total_steps)

    def __repr__(self) -> str:
        what = f"wd={self.wd:g}" if self.wd is not None else (
            f"lr_max={self.lr_max:.3g}" if self.lr_max is not None else "lr_max=None")  # fmt: skip
        parts = [what]
        if self.prefixes:
            parts.append(f"{len(self.prefixes)} candidates on rungs {self.rungs} "
                         f"(of {self.total_steps} steps)")  # fmt: skip
        if self.held_samples:
            parts.append(f"{self.held_samples} samples held back")
        parts.append(f"search cost {self.compute_ratio:.1%} of the run")
        if self.rollbacks:
            parts.append(f"{len(self.rollbacks)} rollback(s)")
        if self.stalled:
            parts.append("the run never trained")
        return f"AutoResult({', '.join(parts)})\n  reason: {self.reason}"

    def prefix(self, lr_max: float) -> Prefix | None:
        """The prefix trained at ``lr_max`` (None: none was)."""
        for p in self.prefixes:
            if math.isclose(p.lr_max, lr_max, rel_tol=1e-9) and p.state is not None:
                return p
        return None

    def reuse(self, lr_max: float | None) -> int:
        """The run continues the prefix at ``lr_max`` (None: it starts from scratch):
        its steps move from the search's cost to the run's. Returns them."""
        p = None if lr_max is None else self.prefix(lr_max)
        steps = p.steps if p is not None and not p.diverged else 0
        self.steps_used += self.reused_steps - steps
        self.reused_steps = steps
        return steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr_max": self.lr_max, "wd": self.wd, "reason": self.reason,
            "candidates": self.candidates, "probes": [p.to_dict() for p in self.probes],
            "prefixes": [{"lr_max": p.lr_max, "steps": p.steps, "diverged": p.diverged,
                          "scores": {str(k): (None if math.isinf(v) else v)
                                     for k, v in p.scores.items()}} for p in self.prefixes],
            "rungs": self.rungs, "budget": self.budget, "held_samples": self.held_samples,
            "held_batches": self.held_batches, "start_loss": self.start_loss,
            "reused_steps": self.reused_steps, "trained": self.trained, "stalled": self.stalled,
            "steps_used": self.steps_used, "total_steps": self.total_steps,
            "compute_ratio": self.compute_ratio, "rollbacks": self.rollbacks,
            "range_test": self.range_test.to_dict() if self.range_test else None,
        }  # fmt: skip


def candidates(res: RangeTestResult) -> list[float]:
    """The sweep's window on the fixed lattice ``10**(k/2)`` (x sqrt(10) apart, as the
    grids users try by hand), largest first: from the largest point at or below
    ``1/DIV_TOP`` of the LR where the loss diverged for good, down to at least the LR of
    the lowest smoothed loss (``WINDOW`` points, one more when the minimum sits lower).

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
    while len(out) < WINDOW or out[-1] > bottom * (1 + 1e-9):
        out.append(10 ** ((k - len(out)) / 2))
        if len(out) >= WINDOW + 1:  # a curve whose bottom sits far below its top
            break
    return out


def lattice(top: float, n: int) -> list[float]:
    """``n`` lattice points ``10**(k/2)`` from the largest at or below ``top``, downwards."""
    k = math.floor(2 * math.log10(top) + 1e-9)
    return [10 ** ((k - i) / 2) for i in range(n)]


def sweep_steps(allowed: float) -> int:
    """The sweep's steps within ``allowed``: ``SWEEP_STEPS``, at most ``SWEEP_SHARE`` of
    it, none when that leaves fewer than ``MIN_SWEEP``."""
    sweep = min(SWEEP_STEPS, math.floor(SWEEP_SHARE * allowed))
    return sweep if sweep >= MIN_SWEEP else 0


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
