"""``lr_max="auto"`` (v6) and ``wd="auto"``: candidate peaks from a range test, ranked.

The search serves one 1cycle run of ``total_steps`` optimizer steps. It reads Smith's
range test to place candidates, then ranks them by short runs through the Learner's own
loop (the run's update rule: decoupled weight decay, the callbacks marked
``affects_update``), everything restored afterwards. Two ways to rank (``METHOD``):

- ``"probes"`` (the default): a short 1cycle of each candidate (its own warm-up, peak
  and anneal: ``PROBE_FRAC`` of the run at the default budget) from the same weights and
  batches, scored on samples held back from training that no probe trains on
  (``rank_by_probes``). The pick lies between lattice points (``between``). A probe
  meets its peak; that is what ranks peaks.
- ``"prefixes"``: prefixes of the run itself (``onecycle.prefixes``): each candidate's
  own 1cycle over all of the run's steps, scored after a short cool-down branch on a
  validation split held back for the whole run, the better half going on to a longer
  prefix, the highest-but-one lattice point joining when the top wins, the pick
  corrected for the horizon (``horizon``), and the run *continuing* the pick's prefix
  (the finished run equals a plain run at the pick bit for bit). Measured on the suite
  it ranks worse at the default budget (prefixes of 3-9% of a run never meet the peak:
  docs/results/auto_lr_v6.md); kept to be developed, not the default.

Steps common to both:

1. **Sweep** (``lr_sweep``): Smith's range test, momentum at 1cycle's peak value; its
   window (``candidates``: lattice points 10**(k/2) from half the LR where the loss
   diverged for good down to its minimum) places the candidates. A sweep that is too
   flat, too noisy or too short to read, or a budget too small for one, falls back to
   ``DEFAULT_TOP``: the lattice is probed from there down.
2. **Pick**: the lowest held-back loss. Nothing is refused while some candidate stays
   finite: if none trained (no score ``TRAINS`` below the model's as it is: a plateau,
   or a model already trained), the largest candidate that did not get worse is the
   pick, with a warning, and the run's collapse guard (``onecycle.fallback``) falls back
   to the next lower candidate if it makes no progress. Only when every candidate, and
   two lattice points below them, diverged is there no ``lr_max``.

``budget`` (``auto_budget`` in ``fit_one_cycle``, ``--auto-budget`` in the CLI; default
``BUDGET``) is what the search may spend *beyond* the run, as a fraction of the run's
steps: the sweep, every probe (or prefix but the pick's, and every branch), every
held-back evaluation (a third of a step per batch). Probes lengthen with it; a short run
gets fewer candidates, never an error (``plan`` sizes the prefixes' rungs the same way).
``AutoResult.compute_ratio`` reports the cost.

``wd_range_test`` and ``momentum_range_test`` are Smith's other two sweeps
(arXiv:1803.09820, section 4): short 1cycle probes at the chosen ``lr_max`` with a few
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
>>> auto = auto_lr_max(learn, total_steps=400)
>>> torch.equal(learn.model[0].weight, before), auto.compute_ratio <= BUDGET
(True, True)
>>> min(auto.candidates) <= auto.lr_max <= max(auto.candidates), len(auto.probes)
(True, 3)
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onecycle import schedules as S
from onecycle.callbacks import Callback
from onecycle.errors import ConfigError, check_int, check_range
from onecycle.prefixes import BRANCH, MIN_BRANCH, Prefix, advance, held_loss, validation_split
from onecycle.probes import (
    EVAL_COST,
    ProbeResult,
    held_count,
    lr_sweep,
    probe,
    probe_cost,
)
from onecycle.range_test import RangeTestResult
from onecycle.scheduler import momentum_key

if TYPE_CHECKING:
    from onecycle.learner import Learner

__all__ = [
    "AutoResult",
    "ProbeResult",
    "auto_lr_max",
    "between",
    "candidates",
    "held_batches",
    "lr_sweep",
    "momentum_range_test",
    "plan",
    "probe",
    "sweep_steps",
    "too_close",
    "wd_range_test",
]

log = logging.getLogger(__name__)

# The sweep that locates the candidates: 8.6 points per decade from 1e-6 to 10, or fewer
# steps when the budget is small (at most SWEEP_SHARE of it; none under MIN_SWEEP steps).
START_LR, END_LR, SWEEP_STEPS, MIN_SWEEP, SWEEP_SHARE = 1e-6, 10.0, 60, 20, 0.25
# What the search may spend beyond the run, as a fraction of the run's steps.
BUDGET = 0.3
# Candidates at the first rung; the best KEEP go on, to RUNG_GROWTH x as many steps.
MAX_CANDIDATES, KEEP, RUNG_GROWTH = 4, 2, 3
# The sweep's window: this many lattice points from the top (one more to reach its minimum).
WINDOW = 3
# The second rung ends at most here (a fraction of the run): past the warm-up's peak.
MAX_RUNG = 0.5
# Shortest prefix worth scoring (optimizer steps); a first rung of a two-rung search is
# also at least MIN_RUNG of the run (shorter, fewer candidates on one rung rank better).
MIN_PREFIX, MIN_RUNG = 8, 0.02
# Where the lattice starts when the sweep cannot say: SGD-like / adaptive optimizers.
DEFAULT_TOP = {"sgd": 10**-0.5, "adaptive": 10**-1.5}
# The highest candidate: the LR where the sweep diverged for good, / DIV_TOP.
DIV_TOP = 2.0
# A candidate "trains" if its score ends at least this fraction below the untrained one.
TRAINS = 0.01
# Validation split: HELD_BATCHES batches at most, and at most this share of the samples.
HELD_FRACTION = 0.1
EXTEND = True
# The horizon correction's exponent (``horizon``): set on the suite's calibration and seen
# pairs from the rung scores of an uncorrected search (docs/results/auto_lr_v6.md).
HORIZON_BETA = 0.0
# The shortest probe worth running (optimizer steps), here and in Smith's wd and momentum
# tests; a probe's length at the default budget (PROBE_FRAC of the run: v4/v5's, read
# off the calibration pairs, docs/results/auto_lr_history.md), in proportion to the budget.
MIN_PROBE_STEPS, PROBE_FRAC = 8, 0.04
# The search that ranks the candidates: "probes" (short 1cycles that reach their peak;
# the default: on the suite's calibration and seen pairs, prefixes of 3-9% of the run
# favoured the highest candidate, 7/25 pairs within target against the probes' 13/25 -
# docs/results/auto_lr_v6.md) or "prefixes" (prefixes of the run itself, continued).
METHOD = "probes"


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
            "reused_steps": self.reused_steps,
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


def _lattice(top: float, n: int) -> list[float]:
    k = math.floor(2 * math.log10(top) + 1e-9)
    return [10 ** ((k - i) / 2) for i in range(n)]


def held_batches(learn: Learner) -> int:
    """Batches of training samples held back for scoring: ``held_count`` (8, or a tenth
    of the batches), at most ``HELD_FRACTION`` of the samples, at least one."""
    n = len(learn.train_data)  # type: ignore[arg-type]
    return max(1, min(held_count(learn), math.floor(HELD_FRACTION * n)))


@dataclass(frozen=True)
class Plan:
    """How a budget is spent: a sweep of ``sweep`` steps (0: none), ``k`` candidates to
    ``rungs[0]`` steps, the best ``KEEP`` on to ``rungs[1]`` (when there are two)."""

    sweep: int
    k: int
    rungs: tuple[int, ...]
    note: str = ""
    extend: bool = True


def _cost(k: int, rungs: Sequence[int], sweep: int, evals: float, extend: bool = True) -> float:
    """Steps beyond the run: the sweep, every prefix but the pick's, every branch and
    held-back pass (the untrained model's included), and room for the extension upward
    (``EXTEND``: one more prefix on the first rung, or, with two, one from the start)."""
    branch = [max(MIN_BRANCH, round(BRANCH * r)) for r in rungs]
    n = [k] + [min(k, KEEP)] * (len(rungs) - 1)
    cost = sweep + evals * (1 + sum(n))
    prev = 0
    for r, b, m in zip(rungs, branch, n):
        cost += m * (r - prev) + m * b
        prev = r
    if extend:
        cost += rungs[0] + (0 if len(rungs) > 1 else branch[0] + evals)
    return cost - rungs[-1]


def sweep_steps(allowed: float) -> int:
    """The sweep's steps within ``allowed``: ``SWEEP_STEPS``, at most ``SWEEP_SHARE`` of
    it, none when that leaves fewer than ``MIN_SWEEP``."""
    sweep = min(SWEEP_STEPS, math.floor(SWEEP_SHARE * allowed))
    return sweep if sweep >= MIN_SWEEP else 0


def plan(total_steps: int, budget: float, evals: float) -> Plan:
    """The largest search that fits ``budget`` x ``total_steps`` steps beyond the run
    (``evals``: the cost of one held-back evaluation), in this order of preference:
    ``MAX_CANDIDATES`` candidates and two rungs, three and two, three and one, two and
    one (room kept for the extension upward), two and one without it; with a sweep when
    it can have ``MIN_SWEEP`` steps, else from ``DEFAULT_TOP``.

    >>> plan(1200, 0.3, 8 / 3)
    Plan(sweep=60, k=4, rungs=(33, 99), note='', extend=True)
    >>> plan(120, 0.3, 4 / 3).k, plan(120, 0.3, 4 / 3).sweep  # a 3-epoch run: cheaper
    (2, 0)
    """
    allowed = budget * total_steps
    sweep = sweep_steps(allowed)
    options = [(MAX_CANDIDATES, 2, EXTEND), (3, 2, EXTEND), (3, 1, EXTEND), (2, 1, EXTEND),
               (2, 1, False)]  # fmt: skip
    for k, n_rungs, extend in options:
        # the cost grows with r1: take the largest r1 that fits, within MAX_RUNG
        growth = [RUNG_GROWTH**i for i in range(n_rungs)]
        cap = math.floor(MAX_RUNG * total_steps / growth[-1])
        best = None
        lo = MIN_PREFIX if n_rungs == 1 else max(MIN_PREFIX, math.ceil(MIN_RUNG * total_steps))
        hi = cap
        while lo <= hi:
            mid = (lo + hi) // 2
            if _cost(k, [mid * g for g in growth], sweep, evals, extend) <= allowed:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            note = "" if (k, n_rungs) == (MAX_CANDIDATES, 2) else (
                f"a budget of {budget:g} x {total_steps} steps: {k} candidates, "
                f"{n_rungs} rung{'s' if n_rungs > 1 else ''}")  # fmt: skip
            return Plan(sweep, k, tuple(best * g for g in growth), note, extend)
    return Plan(0, 0, (), f"a budget of {budget:g} x {total_steps} steps leaves no room for "
                f"a prefix of {MIN_PREFIX} steps")  # fmt: skip


def default_spec(
    lrs: Sequence[float], moms: tuple[float, float, float] | None, has_momentum: bool,
    pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5,
) -> dict[str, Any]:  # fmt: skip
    """``fit_one_cycle``'s schedules for the peaks ``lrs`` (its defaults)."""
    spec: dict[str, Any] = {"lr": [S.one_cycle(v, div, div_final, pct_start) for v in lrs]}
    if has_momentum:
        spec["momentum"] = S.one_cycle_moms(moms or (0.95, 0.85, 0.95), pct_start)  # type: ignore[arg-type]
    return spec


def _scoring_batches(learn: Learner, n: int) -> tuple[Any, list[Any], str]:
    """(the data the run trains on, the batches the search scores on, what they are)."""
    rest, held = validation_split(learn.train_data, n)
    if held:
        return rest, held, ""
    if learn.valid_data is not None:
        return (
            learn.train_data,
            list(learn.valid_data),
            "scored on valid_data (the training data is not a onecycle.data.Loader: no split)",
        )
    held = [b for _, b in zip(range(n), learn.train_data)]
    return learn.train_data, held, ("scored on training batches the run also trains on "
                                    "(no onecycle.data.Loader, no valid_data): over-fitting "
                                    "is not seen")  # fmt: skip


def auto_lr_max(
    learn: Learner,
    total_steps: int | None = None,
    *,
    budget: float = BUDGET,
    n_epoch: int | None = None,
    spec: Callable[[list[float]], Mapping[str, Any]] | None = None,
    moms: tuple[float, float, float] | None = None,
    wd: float | None = None,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    cbs: Sequence[Callback] = (),
    method: str | None = None,
) -> AutoResult:
    """``lr_max`` for a 1cycle run of ``total_steps`` optimizer steps, or of ``n_epoch``
    epochs of the training data less the validation split (then ``total_steps`` is
    counted on that), found on prefixes of that run (module docstring).
    ``spec(peaks)``: the run's schedules for one peak per param group (default:
    ``fit_one_cycle``'s with ``moms``, ``pct_start``, ``div``, ``div_final``); a prefix
    is exactly the start of ``learn.fit(n_epoch, peaks, schedules=spec(peaks), wd=wd,
    _total_steps=total_steps)``. Spends at most ``budget`` x ``total_steps`` steps
    beyond the run. Everything is restored; the result keeps each prefix's state, and
    the split's training loader in ``train_data``, for ``fit_one_cycle`` to continue
    the pick's prefix as the run.

    ``method`` (default ``METHOD``): ``"probes"`` ranks the candidates by short probes
    instead (``rank_by_probes``): no split, nothing for the run to continue.
    """
    if (total_steps is None) == (n_epoch is None):
        raise ConfigError("total_steps", total_steps, "a number of steps, or None with n_epoch")
    if n_epoch is not None:
        n_epoch = check_int("n_epoch", n_epoch)
    budget = check_range("budget", budget, 0.0, math.inf, lo_open=True, hi_open=True)
    if learn.opt is None:
        learn._make_opt([1e-3] * len(learn.param_groups))
    assert learn.opt is not None
    learn._setup_distributed()
    has_mom = momentum_key(learn.opt) is not None
    make_spec = spec or (lambda peaks: default_spec(peaks, moms, has_mom, pct_start, div,
                                                    div_final))  # fmt: skip
    adaptive = has_mom and momentum_key(learn.opt) == "betas"
    end_mom = (moms or learn.moms)[2] if has_mom else None
    method = METHOD if method is None else method
    if method not in ("probes", "prefixes"):
        raise ConfigError("method", method, "'probes' or 'prefixes'")
    data = learn.train_data
    n_held = held_batches(learn)
    rest, held, scored_on = (
        (data, [], "") if method == "probes" else _scoring_batches(learn, n_held)
    )
    learn.train_data = rest
    try:
        per_epoch = learn.steps_per_epoch(cbs)
    finally:
        learn.train_data = data
    if n_epoch is not None:
        total_steps = n_epoch * per_epoch
    total_steps = check_int("total_steps", total_steps)
    n_sched = n_epoch if n_epoch is not None else math.ceil(total_steps / max(1, per_epoch))
    evals = EVAL_COST * len(held)
    p = plan(total_steps, budget, evals) if method == "prefixes" else Plan(
        sweep_steps(budget * total_steps), MAX_CANDIDATES, ())  # fmt: skip
    out = AutoResult(None, "", None, [], [], 0.0, total_steps, budget=budget,
                     held_batches=len(held) if not scored_on else 0,
                     held_samples=sum(len(b[1]) for b in held) if not scored_on else 0,
                     train_data=rest)  # fmt: skip
    notes = [n for n in (p.note, scored_on) if n]
    learn.train_data = rest
    try:
        ratios = [float(g["lr"]) for g in learn.opt.param_groups]
        ref = ratios[-1] or 1.0
        ratios = [r / ref for r in ratios]
        if p.sweep:
            res = lr_sweep(learn, START_LR, END_LR, p.sweep, moms=moms, wd=wd, cbs=cbs)
            out.range_test, out.steps_used = res, float(len(res.lrs))
            ratios = res.group_ratios
            window = candidates(res)
        else:
            res, window = None, []
        kind = "adaptive" if adaptive else "sgd"
        if not window:
            if res is None:
                why = f"no room for one in a budget of {budget:g} x {total_steps} steps"
            elif res.recommended is not None and res.recommended.lr is None:
                why = res.recommended.reason
            else:
                why = "it shows no window"
            notes.append(f"the sweep could not place candidates ({why}): the lattice from "
                         f"{DEFAULT_TOP[kind]:.3g} down")  # fmt: skip
            window = _lattice(DEFAULT_TOP[kind], max(p.k, 2))
        if method == "probes":
            rank_by_probes(learn, out, window, res, ratios, moms=moms, wd=wd,
                           pct_start=pct_start, div=div, div_final=div_final, cbs=cbs)  # fmt: skip
            out.reason = "; ".join([out.reason, *notes]) if notes else out.reason
            return out
        if p.k == 0:  # no room for any prefix: the sweep's reading, or the default top
            rec = res.recommended.lr if res is not None and res.recommended else None
            pick = rec if rec is not None else window[min(1, len(window) - 1)]
            out.lr_max, out.candidates = pick, window
            out.reason = f"{pick:.3g}: no prefixes ({p.note}); " + (
                "the sweep's recommendation" if rec is not None else "the default lattice"
            )
            return out
        cands = window[: p.k] if len(window) >= p.k else _lattice(window[0], p.k)
        out.start_loss = held_loss(learn, held)
        out.steps_used += evals
        _search(learn, out, cands, p, n_sched, make_spec, ratios, held, wd, end_mom, cbs,
                evals)  # fmt: skip
        out.reason = "; ".join([out.reason, *notes]) if notes else out.reason
    finally:
        learn.train_data = data
    return out


def horizon(best: Prefix, prefixes: Sequence[Prefix], total: int) -> Prefix:
    """The candidate for the whole run, from the best at ``best.steps``: short horizons
    favour larger peaks (Wu et al. 2018; Bjorck et al. 2025: the best LR falls with the
    run's length as ``D**-beta``), and a prefix inside the warm-up has not met its peak
    yet. The target ``best.lr_max * (best.steps / total) ** HORIZON_BETA``, rounded to
    the nearest candidate the search trained (the lower on a tie, the lowest if below
    them all), so that the run still continues a prefix.

    >>> ps = [Prefix(1.0, 100), Prefix(10**-0.5, 100), Prefix(0.1, 30)]
    >>> round(horizon(ps[0], ps, 1000).lr_max, 3) if HORIZON_BETA else 0.316
    0.316
    """
    if not HORIZON_BETA or best.steps >= total:
        return best
    target = math.log10(best.lr_max) - HORIZON_BETA * math.log10(total / best.steps)
    ok = [q for q in prefixes if q.state is not None and math.isfinite(q.score)]
    below = [q for q in ok if q.lr_max <= best.lr_max]
    return min(below or [best], key=lambda q: (abs(math.log10(q.lr_max) - target), q.lr_max))


def _search(learn: Learner, out: AutoResult, cands: list[float], p: Plan, n_epoch: int,
            make_spec: Callable[[list[float]], Mapping[str, Any]], ratios: list[float],
            held: list[Any], wd: float | None, end_mom: float | None,
            cbs: Sequence[Callback], evals: float) -> None:  # fmt: skip
    """The rungs (module docstring, step 3) and the pick (step 4), into ``out``."""
    total = out.total_steps
    prefixes = {c: Prefix(c) for c in cands}

    def run(pre: Prefix, to: int) -> float:
        before = pre.steps
        peaks = [pre.lr_max * r for r in ratios]
        score = advance(learn, pre, to, n_epoch=n_epoch, lrs=peaks, spec=make_spec(peaks),
                        total=total, held=held, wd=wd, end_mom=end_mom, cbs=cbs)  # fmt: skip
        branch = min(max(MIN_BRANCH, round(BRANCH * to)), total - to)
        out.steps_used += (to - before) + branch + evals
        return score

    r1 = p.rungs[0]
    for c in cands:
        run(prefixes[c], r1)
    order = sorted(prefixes.values(), key=lambda q: q.score)
    extended: Prefix | None = None
    start = out.start_loss if out.start_loss is not None else math.inf
    if p.extend and order[0].lr_max == max(cands) and order[0].score < start - TRAINS * abs(start):
        # the highest won, and trained: the lattice point above joins (the plan keeps room
        # for it). With two rungs it goes straight to the second, beside the winner
        up = _lattice(max(cands) * 10**0.5 * (1 + 1e-9), 1)[0]
        extended = prefixes[up] = Prefix(up)
        if len(p.rungs) == 1:
            run(extended, r1)
            order = sorted(prefixes.values(), key=lambda q: q.score)
    if all(math.isinf(q.score) for q in order):  # everything diverged: two steps lower
        for c in _lattice(min(cands) / 10**0.5 * (1 + 1e-9), 2):
            prefixes[c] = Prefix(c)
            run(prefixes[c], r1)
        order = sorted(prefixes.values(), key=lambda q: q.score)
    for r in p.rungs[1:]:
        going = [q for q in order if math.isfinite(q.score)][:KEEP]
        if extended is not None and extended.steps == 0:
            going = [*going[: KEEP - 1], extended]
        for q in going:
            run(q, r)
        order = sorted(prefixes.values(), key=lambda q: (-q.steps, q.score))
    out.prefixes = sorted(prefixes.values(), key=lambda q: -q.lr_max)
    out.candidates = [q.lr_max for q in out.prefixes]
    out.rungs = list(p.rungs)
    best = order[0]
    if math.isinf(best.score):
        out.reason = (f"every candidate diverged ({', '.join(f'{c:.3g}' for c in out.candidates)}"
                      f") within {r1} steps: give lr_max")  # fmt: skip
        return
    rung = f"after {best.steps} steps ({100 * best.steps / total:.0f}% of the run) and a cool-down"
    if best.score < start - TRAINS * abs(start):
        pick = horizon(best, list(prefixes.values()), total)
        out.lr_max = pick.lr_max
        out.reason = (f"{best.lr_max:.3g}: lowest held-back loss ({best.score:.4g}, untrained "
                      f"{start:.4g}) {rung}")  # fmt: skip
        if pick is not best:
            out.reason = (f"{pick.lr_max:.3g}: corrected for the horizon from {out.reason} "
                          f"(x ({best.steps}/{total})^{HORIZON_BETA:g}, to the nearest "
                          "candidate)")  # fmt: skip
    else:  # a plateau (nothing moved yet: the largest that stays finite moves first) or a
        # model already trained (the run's guard falls back lower when it makes no progress)
        ok = [q for q in order if math.isfinite(q.score) and q.score <= start + TRAINS * abs(start)]
        pick = max(ok or [best], key=lambda q: q.lr_max)
        out.lr_max = pick.lr_max
        out.reason = (f"{pick.lr_max:.3g}: no candidate had trained {rung} (best held-back loss "
                      f"{best.score:.4g}, untrained {start:.4g}); the largest that did not get "
                      "worse is used, and the run is watched for collapse")  # fmt: skip
        log.warning("lr_max=auto: %s", out.reason)
    out.reuse(out.lr_max)


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
    close = too_close(probes, list(values).index(wd))
    if close:
        runner = float(values[close[0]])
        why = (f"too close to call: wd={float(wd):g} and wd={runner:g} probed "
               f"{close[1]:.2g}% apart, within their batch-to-batch noise; {why} (the "
               "first given of the two)")  # fmt: skip
        log.warning("wd=auto: %s", why)
    peak = lr_max if isinstance(lr_max, float) else float(list(lr_max)[-1])
    return AutoResult(peak, why, None, [], probes, used, total_steps, wd=float(wd))


def too_close(probes: Sequence[ProbeResult], best: int) -> tuple[int, float] | None:
    """The runner-up whose probe the best cannot be told from (``(index, % apart)``), or
    None: the mean per-batch difference on the same held-back batches is under twice its
    standard error (or both losses are equal to 4 digits when there is one batch).

    >>> a = ProbeResult(0.1, 8, 0.2118369, batch_losses=(0.20, 0.22, 0.21, 0.2133476))
    >>> b = ProbeResult(0.1, 8, 0.2118755, batch_losses=(0.21, 0.21, 0.22, 0.2035020))
    >>> too_close([a, b], 0)[0]
    1
    """
    order = sorted((i for i in range(len(probes)) if i != best), key=lambda i: probes[i].loss)
    if not order or not math.isfinite(probes[order[0]].loss):
        return None
    i, a, b = order[0], probes[best], probes[order[0]]
    pct = 100 * (b.loss - a.loss) / max(abs(a.loss), 1e-12)
    d = [y - x for x, y in zip(a.batch_losses, b.batch_losses)]
    if len(d) < 2 or len(d) != len(a.batch_losses):
        return (i, pct) if pct < 0.01 else None
    se = statistics.stdev(d) / math.sqrt(len(d))
    return (i, pct) if statistics.mean(d) < 2 * se else None


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


def rank_by_probes(
    learn: Learner,
    out: AutoResult,
    window: list[float],
    res: RangeTestResult | None,
    ratios: list[float],
    *,
    moms: tuple[float, float, float] | None,
    wd: float | None,
    pct_start: float,
    div: float,
    div_final: float,
    cbs: Sequence[Callback],
) -> None:
    """The candidates ranked by short probes (``probe``: a 1cycle of their own, warm-up,
    peak and anneal, from the same weights and batches, scored on held-back samples no
    probe trains on), into ``out``: the lowest held-back loss, moved towards the
    neighbour that probed next best (``between``). Each probe gets ``PROBE_FRAC`` of the
    run, scaled by ``out.budget / BUDGET``, within what the budget leaves; fewer
    candidates (the lowest go first) when even ``MIN_PROBE_STEPS`` does not fit, and the
    sweep's recommendation (or the lattice's second point) when not even two do.

    Nothing is refused while a probe stays finite: if none trained (a plateau, or a
    model already trained), the largest candidate whose probe did not end worse than
    the model as it is runs, with a warning; if every probe diverged, two lattice points
    below are probed once more before giving up (``lr_max`` None)."""
    total, budget = out.total_steps, out.budget or BUDGET
    allowed = budget * total
    held = EVAL_COST * held_count(learn)
    cands = list(window)
    steps = 0
    while len(cands) >= 2:
        room = allowed - out.steps_used - (len(cands) + 1) * held
        want = max(MIN_PROBE_STEPS, round(PROBE_FRAC * total * budget / BUDGET))
        steps = min(want, math.floor(room / len(cands)))
        if steps >= MIN_PROBE_STEPS:
            break
        cands = cands[:-1]
    out.candidates = cands
    if len(cands) < 2 or steps < MIN_PROBE_STEPS:
        rec = res.recommended.lr if res is not None and res.recommended is not None else None
        out.lr_max = rec if rec is not None else window[min(1, len(window) - 1)]
        out.candidates = window
        out.reason = (f"{out.lr_max:.3g}: a budget of {budget:g} x {total} steps leaves no room "
                      "for probes; " + ("the sweep's recommendation" if rec is not None else
                                        "the lattice's second point"))  # fmt: skip
        return

    def run(lr: float) -> ProbeResult:
        r = probe(learn, [lr * g for g in ratios], steps, moms=moms, wd=wd, pct_start=pct_start,
                  div=div, div_final=div_final, cbs=cbs)  # fmt: skip
        out.steps_used += probe_cost(learn, steps)
        out.probes.append(r)
        return r

    start = probe(learn, cands[-1], 0, cbs=cbs).loss  # the model as it is, held back
    out.start_loss = start
    out.steps_used += held
    scores = {lr: run(lr).loss for lr in cands}
    if all(math.isinf(v) for v in scores.values()):  # everything diverged: lower, once
        cands = [*cands, *_lattice(min(cands) / 10**0.5 * (1 + 1e-9), 2)]
        scores.update({lr: run(lr).loss for lr in cands[-2:]})
        out.candidates = cands
    best = min(cands, key=lambda lr: scores[lr])
    if math.isinf(scores[best]):
        out.reason = (f"every probe diverged ({', '.join(f'{c:.3g}' for c in cands)}) in "
                      f"{steps} steps: give lr_max")  # fmt: skip
        return
    why = f"lowest held-back loss ({scores[best]:.4g}) of {len(cands)} probes of {steps} steps"
    if len(cands) < len(window):
        why += f" (a budget of {budget:g} x {total} steps: {len(cands)} of {len(window)})"
    if scores[best] < start - TRAINS * abs(start):
        peak = between(cands, [scores[c] for c in cands])
        out.lr_max = peak
        out.reason = (f"{peak:.3g}: {why} at {best:.3g}, moved towards the neighbour that "
                      "probed next best" if peak != best else f"{best:.3g}: {why}")  # fmt: skip
        return
    ok = [c for c in cands if scores[c] <= start + TRAINS * abs(start)]
    out.lr_max = max(ok or [best])
    out.reason = (f"{out.lr_max:.3g}: no probe trained in {steps} steps (best held-back loss "
                  f"{scores[best]:.4g}, the model as it is {start:.4g}); the largest that did "
                  "not get worse is used, and the run is watched for collapse")  # fmt: skip
    log.warning("lr_max=auto: %s", out.reason)
