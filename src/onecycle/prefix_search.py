"""``lr_max="auto"`` on prefixes of the run itself (``auto.METHOD = "prefixes"``).

Each candidate trains its own 1cycle over all of the run's steps (``onecycle.prefixes.
advance``) and is scored after a short cool-down branch on a validation split held back
for the whole run; the better half goes on to a longer prefix (successive halving over
the rungs ``plan`` sizes to the budget), the lattice point above joins when the top
candidate wins, the pick is corrected for the horizon (``horizon``), and the run
*continues* the pick's prefix, so that the finished run equals a plain run at the pick
bit for bit. Measured on the suite it ranks worse than the probes at the default budget
(prefixes of 3-9% of a run end inside the warm-up and never meet the peak:
docs/results/auto_lr_v6.md); kept to be developed, not the default.

>>> plan(1200, 0.3, 8 / 3)
Plan(sweep=60, k=4, rungs=(33, 99), note='', extend=True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onecycle.callbacks import Callback
from onecycle.candidates import (
    END_LR,
    MAX_CANDIDATES,
    TRAINS,
    AutoResult,
    lattice,
    sweep_steps,
)
from onecycle.data.loader import Loader
from onecycle.prefixes import BRANCH, Prefix, advance, branch_steps, held_loss, validation_split
from onecycle.probes import EVAL_COST, held_count

if TYPE_CHECKING:
    from onecycle.loop import Loop

__all__ = ["HORIZON_BETA", "Plan", "duel", "duel_cost", "duel_fits", "held_batches", "horizon",
           "plan", "scoring_batches", "search"]  # fmt: skip

log = logging.getLogger("onecycle.auto")  # the messages users know from lr_max="auto"

# The best KEEP of a rung go on, to RUNG_GROWTH x as many steps.
KEEP, RUNG_GROWTH = 2, 3
# The second rung ends at most here (a fraction of the run): past the warm-up's peak.
MAX_RUNG = 0.5
# Shortest prefix worth scoring (optimizer steps); a first rung of a two-rung search is
# also at least MIN_RUNG of the run (shorter, fewer candidates on one rung rank better).
MIN_PREFIX, MIN_RUNG = 8, 0.02
# Validation split: HELD_BATCHES batches at most, and at most this share of the samples.
HELD_FRACTION = 0.1
EXTEND = True
HORIZON_BETA = 0.0
"""The horizon correction's exponent (``horizon``): set on the suite's calibration and seen
pairs from the rung scores of an uncorrected search (docs/results/auto_lr_v6.md)."""


DUEL_K, DUEL_RUNG, DUEL_MIN, DUEL_PROBES, DUEL_SPLIT = 3, 0.3, 0.8, 0.1, 0.02
# The duel (``duel``, at budgets with room for it): the probes' pick and its two lattice
# neighbours, each a prefix of the run to DUEL_RUNG of it (past the warm-up's peak at
# pct_start = 0.25; at least DUEL_MIN x pct_start, where the LR is at 90% of its peak),
# scored after a cool-down branch. Read off prefix-fidelity runs of the suite's
# calibration and seen pairs (docs/results/auto_lr_v6.md, v6.3): around the probes' pick
# the three ranked as the full runs do on 13 of 16 at 30% of the run, 11 at 20%, 8 at 10%
# and 11 at 50%. The probes before a duel get the budget DUEL_PROBES (the duel corrects
# them); the split it scores on is at most DUEL_SPLIT of the samples (at least a batch),
# since the run continues the winner's prefix without them (a 10% split cost MNIST-1D's
# CNN a point, v6.3a).


def duel_cost(rung: int, evals: float) -> float:
    """Steps beyond the run of a duel to ``rung``: every prefix but the winner's (the run
    continues it), every branch and held-back evaluation (the model as it is included)."""
    return (DUEL_K - 1) * rung + DUEL_K * branch_steps(rung) + evals * (DUEL_K + 1)


def duel_fits(budget: float, pct_start: float) -> bool:
    """Whether ``budget`` holds the probes' share (``DUEL_PROBES``) and the shortest duel
    (prefixes to ``DUEL_MIN`` x ``pct_start`` of the run, their branches included)."""
    return budget - DUEL_PROBES >= (DUEL_K - 1 + DUEL_K * BRANCH) * DUEL_MIN * pct_start


def held_batches(learn: Loop) -> int:
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
    branch = [branch_steps(r) for r in rungs]
    n = [k] + [min(k, KEEP)] * (len(rungs) - 1)
    cost = sweep + evals * (1 + sum(n))
    prev = 0
    for r, b, m in zip(rungs, branch, n):
        cost += m * (r - prev) + m * b
        prev = r
    if extend:
        cost += rungs[0] + (0 if len(rungs) > 1 else branch[0] + evals)
    return cost - rungs[-1]


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


def scoring_batches(learn: Loop, n: int) -> tuple[Any, list[Any], str]:
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


def search(learn: Loop, out: AutoResult, cands: list[float], p: Plan, n_epoch: int,
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
        branch = min(branch_steps(to), total - to)
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
        up = lattice(max(cands) * 10**0.5 * (1 + 1e-9), 1)[0]
        extended = prefixes[up] = Prefix(up)
        if len(p.rungs) == 1:
            run(extended, r1)
            order = sorted(prefixes.values(), key=lambda q: q.score)
    if all(math.isinf(q.score) for q in order):  # everything diverged: two steps lower
        for c in lattice(min(cands) / 10**0.5 * (1 + 1e-9), 2):
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
        # model already trained (the run's guard falls back lower if it collapses)
        ok = [q for q in order if math.isfinite(q.score) and q.score <= start + TRAINS * abs(start)]
        pick = max(ok or [best], key=lambda q: q.lr_max)
        out.lr_max, out.trained = pick.lr_max, False
        out.reason = (f"{pick.lr_max:.3g}: no candidate had trained {rung} (best held-back loss "
                      f"{best.score:.4g}, untrained {start:.4g}); the largest that did not get "
                      "worse is used, and the run is watched for collapse")  # fmt: skip
        log.warning("lr_max=auto: %s", out.reason)
    out.reuse(out.lr_max)


def duel(learn: Loop, out: AutoResult, *, n_epoch: int,
         make_spec: Callable[[list[float]], Mapping[str, Any]], ratios: list[float],
         wd: float | None, end_mom: float | None, cbs: Sequence[Callback], pct_start: float,
         budget: float) -> bool:  # fmt: skip
    """After the probes (``auto.rank_by_probes``) picked ``out.lr_max``: the lattice point
    nearest it and the points either side of it each train as a prefix of the real run to
    ``DUEL_RUNG`` of its steps (less, down to ``DUEL_MIN`` x ``pct_start``, if ``budget``
    x the run's steps, the probes' included, has no room for more), are scored by a
    cool-down branch on a validation split held back from the training data (at most
    ``DUEL_SPLIT`` of the samples), and the lowest held-back loss is the pick; the run
    continues its prefix, on the training data less the split (``out.train_data``). When
    no prefix trained (a plateau at the rung too) or all diverged, the probes' pick
    stands. Returns False, changing only ``out.reason`` and the steps spent, when there is
    no duel. Short probes rank peaks for a probe's length; a prefix past the warm-up's
    peak, cooled down, ranks them more as the whole run does."""
    assert out.lr_max is not None
    data = learn.train_data
    n_b = held_batches(learn)
    if isinstance(data, Loader):  # a small split: the run goes on without it
        n_b = max(1, min(n_b, math.floor(DUEL_SPLIT * data.n_samples / data.batch_size)))
    rest, held, scored_on = scoring_batches(learn, n_b)
    learn.train_data = rest
    try:
        total = n_epoch * learn.steps_per_epoch(cbs)
        evals = EVAL_COST * len(held)
        room = budget * total - out.steps_used  # the run's steps on the split: its ratio
        rung = round(DUEL_RUNG * total)
        while rung > 0 and duel_cost(rung, evals) > room:
            rung -= 1
        if rung < max(MIN_PREFIX, math.ceil(DUEL_MIN * pct_start * total)):
            out.reason += (f"; no duel (a budget of {budget:g} x {out.total_steps} steps leaves "
                           "no room for prefixes to the warm-up's peak)")  # fmt: skip
            return False
        k = round(2 * math.log10(out.lr_max))
        cands = [c for c in (10 ** ((k + d) / 2) for d in (1, 0, -1)) if c <= END_LR * (1 + 1e-9)]
        start = held_loss(learn, held)
        used = evals
        prefixes = [Prefix(c) for c in cands]
        for q in prefixes:
            peaks = [q.lr_max * r for r in ratios]
            advance(learn, q, rung, n_epoch=n_epoch, lrs=peaks, spec=make_spec(peaks),
                    total=total, held=held, wd=wd, end_mom=end_mom, cbs=cbs)  # fmt: skip
            used += rung + branch_steps(rung) + evals
    finally:
        learn.train_data = data
    out.steps_used += used
    scores = ", ".join(f"{q.lr_max:.3g}: {q.score:.4g}" for q in prefixes)
    ok = [q for q in prefixes if math.isfinite(q.score)]
    best = min(ok, key=lambda q: q.score) if ok else None
    if best is None or not best.score < start - TRAINS * abs(start):
        why = "all diverged" if best is None else "none trained"
        out.reason += (f"; a duel of prefixes of {rung} steps ({scores}; untrained "
                       f"{start:.4g}): {why}, the probes' pick stands")  # fmt: skip
        return False
    out.prefixes, out.rungs, out.start_loss = prefixes, [rung], start
    out.candidates = sorted({*out.candidates, *cands}, reverse=True)
    out.train_data, out.total_steps = rest, total
    out.held_batches = 0 if scored_on else len(held)
    out.held_samples = 0 if scored_on else sum(len(b[1]) for b in held)
    out.reason = (f"{best.lr_max:.3g}: lowest held-back loss of a duel of prefixes of "
                  f"{rung} steps ({100 * rung / total:.0f}% of the run) and a cool-down "
                  f"({scores}; untrained {start:.4g}), around the probes' {out.lr_max:.3g} "
                  f"[{out.reason}]" + (f"; {scored_on}" if scored_on else ""))  # fmt: skip
    out.lr_max = best.lr_max
    out.reuse(best.lr_max)
    for q in prefixes:  # a rollback only goes lower: the memory of those above goes now
        if q.lr_max > best.lr_max:
            q.state = None
    return True
