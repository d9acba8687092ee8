"""``lr_max="auto"`` (v6) and ``wd="auto"``: candidate peaks from a range test, ranked.

The search serves one 1cycle run of ``total_steps`` optimizer steps. It reads Smith's
range test to place candidates, then ranks them by short runs through the Learner's own
loop (the run's update rule: decoupled weight decay, the callbacks marked
``affects_update``), everything restored afterwards. Two ways to rank (``METHOD``):

- ``"probes"`` (the default): a short 1cycle of each candidate (its own warm-up, peak
  and anneal: ``PROBE_FRAC`` of the run at the default budget, split over ``ORDERS``
  orders of the data whose scores are averaged) from the same weights, scored on samples
  held back from training that no probe trains on (``rank_by_probes``). When the
  highest candidate wins, the lattice point above it is probed, and so on while it
  keeps winning and the budget has room. The pick lies
  between lattice points (``between``). A probe meets its peak; that is what ranks
  peaks.
- ``"prefixes"``: prefixes of the run itself, continued as the run
  (``onecycle.prefix_search``); measured on the suite it ranks worse at the default
  budget, and is kept to be developed, not the default.

Where things live: this module is the entry (``auto_lr_max``) and the probes' ranking;
the lattice, the sweep's window, ``between`` and ``AutoResult`` are in
``onecycle.candidates``; the prefix search in ``onecycle.prefix_search``; Smith's
weight-decay and momentum sweeps (``wd="auto"``) in ``onecycle.sweeps``.

Steps common to both:

1. **Sweep** (``lr_sweep``): Smith's range test, momentum at 1cycle's peak value; its
   window (``candidates``: lattice points 10**(k/2) from half the LR where the loss
   diverged for good down to its minimum) places the candidates. A sweep that is too
   flat, too noisy or too short to read, or a budget too small for one, falls back to
   ``DEFAULT_TOP``: the lattice is probed from there down.
2. **Pick**: the lowest held-back loss. Nothing is refused while some candidate stays
   finite: if none trained (no score ``TRAINS`` below the model's as it is: a plateau,
   or a model already trained), the largest candidate that did not get worse is the
   pick, with a warning (``AutoResult.trained`` False), and the run's collapse guard
   (``onecycle.fallback``) falls back to the next lower candidate if the run's loss is
   not finite, or falls and comes back to its start; it does not ask for progress by
   the end of the warm-up (a run may leave a plateau later). Only when every
   candidate, and two lattice points below them, diverged is there no ``lr_max``.

``budget`` (``auto_budget`` in ``fit_one_cycle``, ``--auto-budget`` in the CLI; default
``BUDGET``) is what the search may spend *beyond* the run, as a fraction of the run's
steps: the sweep, every probe (or prefix but the pick's, and every branch), every
held-back evaluation (a third of a step per batch). Probes lengthen with it; a short run
gets fewer candidates, never an error (``plan`` sizes the prefixes' rungs the same way).
``AutoResult.compute_ratio`` reports the cost. A budget with room for it (about 0.65
and up; 1.0 is what was measured) buys **a duel** after cheaper probes
(``prefix_search.duel``): the probes' pick and its two lattice neighbours as prefixes
of the run to 30% of it, past the warm-up's peak, scored after a cool-down on a small
split held back from training; the run continues the winner's prefix.

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
>>> min(auto.candidates) <= auto.lr_max <= max(auto.candidates), {p.orders for p in auto.probes}
(True, {2})
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from onecycle import schedules as S
from onecycle.callbacks import Callback
from onecycle.candidates import (
    END_LR,
    MAX_CANDIDATES,
    MIN_PROBE_STEPS,
    START_LR,
    SWEEP_STEPS,  # noqa: F401
    TRAINS,
    AutoResult,
    between,
    candidates,
    lattice,
    sweep_steps,
)
from onecycle.errors import ConfigError, check_int, check_range
from onecycle.prefix_search import (  # HORIZON_BETA, KEEP, horizon: read as auto.X too
    DUEL_PROBES,
    HORIZON_BETA,  # noqa: F401
    KEEP,  # noqa: F401
    Plan,
    duel,
    duel_fits,
    held_batches,
    horizon,  # noqa: F401
    plan,
    scoring_batches,
    search,
)
from onecycle.prefixes import held_loss
from onecycle.probes import (
    EVAL_COST,
    ProbeResult,
    held_count,
    lr_sweep,
    probe,
    probe_cost,
    reorderable,
)
from onecycle.range_test import RangeTestResult
from onecycle.scheduler import momentum_key
from onecycle.sweeps import momentum_range_test, too_close, wd_range_test

if TYPE_CHECKING:
    from onecycle.loop import Loop

__all__ = [
    "AutoResult", "ProbeResult", "auto_lr_max", "between", "candidates", "held_batches",
    "lr_sweep", "momentum_range_test", "plan", "probe", "sweep_steps", "too_close",
    "wd_range_test",
]  # fmt: skip

log = logging.getLogger(__name__)

BUDGET = 0.3
"""What the search may spend beyond the run, as a fraction of the run's steps."""
DEFAULT_TOP = {"sgd": 10**-0.5, "adaptive": 10**-1.5}
"""Where the lattice starts when the sweep cannot say: SGD-like / adaptive optimizers."""
PROBE_FRAC = 0.04
"""A probe's length at the default budget, as a fraction of the run (v4/v5's, read off the
calibration pairs, docs/results/auto_lr_history.md), in proportion to the budget."""
ORDERS = 2
"""Data orders per probe: each candidate's probe runs ``ORDERS`` times at ``1/ORDERS`` of
its length, in as many orders of the training data (``probe(order=k)``), from the same
weights, and its held-back losses are averaged. Measured on the suite (v6.2,
docs/results/auto_lr_v6.md): the seed-to-seed spread of the gap between two neighbouring
candidates is 3-30x the held-back batches' own noise, so the noise to average is the
trajectory's. A loader with one order (``probes.reorderable``), or a probe that would
fall under ``MIN_PROBE_STEPS``, gets one order."""
METHOD = "probes"
"""The search that ranks the candidates: ``"probes"`` (short 1cycles that reach their
peak; the default: on the suite's calibration and seen pairs, prefixes of 3-9% of the run
favoured the highest candidate, 7/25 pairs within target against the probes' 13/25 -
docs/results/auto_lr_v6.md) or ``"prefixes"`` (``onecycle.prefix_search``)."""


def default_spec(
    lrs: Sequence[float], moms: tuple[float, float, float] | None, has_momentum: bool,
    pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5,
) -> dict[str, Any]:  # fmt: skip
    """``fit_one_cycle``'s schedules for the peaks ``lrs`` (its defaults)."""
    spec: dict[str, Any] = {"lr": [S.one_cycle(v, div, div_final, pct_start) for v in lrs]}
    if has_momentum:
        spec["momentum"] = S.one_cycle_moms(moms or (0.95, 0.85, 0.95), pct_start)  # type: ignore[arg-type]
    return spec


def auto_lr_max(
    learn: Loop,
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
    rest, held, scored_on = (data, [], "") if method == "probes" else scoring_batches(learn, n_held)
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
    # a budget with room for a duel past the warm-up's peak (``prefix_search.duel``): the
    # sweep and probes get DUEL_PROBES of the run, the duel the rest
    dueling = method == "probes" and n_epoch is not None and duel_fits(budget, pct_start)
    search_budget = DUEL_PROBES if dueling else budget
    p = plan(total_steps, budget, evals) if method == "prefixes" else Plan(
        sweep_steps(search_budget * total_steps), MAX_CANDIDATES, ())  # fmt: skip
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
                why = f"no room for one in a budget of {search_budget:g} x {total_steps} steps" + (
                    " (the probes' share: a duel gets the rest)" if dueling else ""
                )
            elif res.recommended is not None and res.recommended.lr is None:
                why = res.recommended.reason
            else:
                why = "it shows no window"
            notes.append(f"the sweep could not place candidates ({why}): the lattice from "
                         f"{DEFAULT_TOP[kind]:.3g} down")  # fmt: skip
            window = lattice(DEFAULT_TOP[kind], max(p.k, 2))
        if method == "probes":
            rank_by_probes(learn, out, window, res, ratios, moms=moms, wd=wd,
                           pct_start=pct_start, div=div, div_final=div_final, cbs=cbs,
                           budget=search_budget)  # fmt: skip
            out.reason = "; ".join([out.reason, *notes]) if notes else out.reason
            if dueling and out.lr_max is not None:
                assert n_epoch is not None
                learn.train_data = data
                duel(learn, out, n_epoch=n_epoch, make_spec=make_spec, ratios=ratios, wd=wd,
                     end_mom=end_mom, cbs=cbs, pct_start=pct_start,
                     budget=budget)  # fmt: skip
            return out
        if p.k == 0:  # no room for any prefix: the sweep's reading, or the default top
            rec = res.recommended.lr if res is not None and res.recommended else None
            pick = rec if rec is not None else window[min(1, len(window) - 1)]
            out.lr_max, out.candidates = pick, window
            out.reason = f"{pick:.3g}: no prefixes ({p.note}); " + (
                "the sweep's recommendation" if rec is not None else "the default lattice"
            )
            return out
        cands = window[: p.k] if len(window) >= p.k else lattice(window[0], p.k)
        out.start_loss = held_loss(learn, held)
        out.steps_used += evals
        search(learn, out, cands, p, n_sched, make_spec, ratios, held, wd, end_mom, cbs,
                evals)  # fmt: skip
        out.reason = "; ".join([out.reason, *notes]) if notes else out.reason
    finally:
        learn.train_data = data
    return out


def averaged(results: Sequence[ProbeResult]) -> ProbeResult:
    """One score for a candidate probed in several data orders (same LR, same steps, the
    same held-back batches): the mean held-back loss (infinite if any order diverged),
    batch by batch and over the batches, and the mean metrics.

    >>> a = ProbeResult(0.1, 8, 0.3, batch_losses=(0.2, 0.4))
    >>> b = ProbeResult(0.1, 8, 0.5, batch_losses=(0.4, 0.6))
    >>> r = averaged([a, b]); round(r.loss, 6), [round(v, 6) for v in r.batch_losses], r.orders
    (0.4, [0.3, 0.5], 2)
    """
    first, n = results[0], len(results)
    if any(math.isinf(r.loss) for r in results):
        return replace(first, loss=math.inf, metrics={}, batch_losses=(), orders=n)
    losses = tuple(sum(v) / n for v in zip(*(r.batch_losses for r in results)))
    metrics = {k: sum(r.metrics.get(k, 0.0) for r in results) / n for k in first.metrics}
    return replace(first, loss=sum(r.loss for r in results) / n, metrics=metrics,
                   batch_losses=losses, orders=n)  # fmt: skip


def rank_by_probes(
    learn: Loop,
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
    budget: float | None = None,
) -> None:
    """The candidates ranked by short probes (``probe``: a 1cycle of their own, warm-up,
    peak and anneal, from the same weights and batches, scored on held-back samples no
    probe trains on), into ``out``: the lowest held-back loss, moved towards the
    neighbour that probed next best (``between``). Each probe gets ``PROBE_FRAC`` of the
    run, scaled by ``out.budget / BUDGET``, within what the budget leaves; fewer
    candidates (the lowest go first) when even ``MIN_PROBE_STEPS`` does not fit, and the
    sweep's recommendation (or the lattice's second point) when not even two do. Each
    probe runs in ``ORDERS`` data orders at that fraction of its length, scores averaged
    (``averaged``): one order where its length would fall under ``MIN_PROBE_STEPS``. When
    the highest candidate probes best, the point above it is probed too, while it keeps
    winning, the budget has room and it is at most ``END_LR``; a point above that loses
    only says "not higher" and is left out of ``between`` (a probe's short warm-up cannot
    take what a run's can).

    Nothing is refused while a probe stays finite: if none trained (a plateau, or a
    model already trained), the largest candidate whose probe did not end worse than
    the model as it is runs, with a warning; if every probe diverged, two lattice points
    below are probed once more before giving up (``lr_max`` None)."""
    total, budget = out.total_steps, budget or out.budget or BUDGET
    allowed = budget * total
    held = EVAL_COST * held_count(learn)
    cands = list(window)  # highest first, as ``candidates`` and ``lattice`` give them
    length = round(PROBE_FRAC * total * budget / BUDGET)  # a probe's steps, all orders
    orders = ORDERS if reorderable(learn) else 1
    steps = 0
    while len(cands) >= 2:
        for k in dict.fromkeys((orders if length >= orders * MIN_PROBE_STEPS else 1, 1)):
            room = allowed - out.steps_used - held - len(cands) * k * held
            want = max(MIN_PROBE_STEPS, round(length / k))
            steps = min(want, math.floor(room / (len(cands) * k)))
            if steps >= MIN_PROBE_STEPS:
                orders = k
                break
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
        rs = [probe(learn, [lr * g for g in ratios], steps, moms=moms, wd=wd,
                    pct_start=pct_start, div=div, div_final=div_final, cbs=cbs, order=k)
              for k in range(orders)]  # fmt: skip
        r = rs[0] if orders == 1 else averaged(rs)
        out.steps_used += orders * probe_cost(learn, steps)
        out.probes.append(r)
        return r

    start = probe(learn, cands[-1], 0, cbs=cbs).loss  # the model as it is, held back
    out.start_loss = start
    out.steps_used += held
    scores = {lr: run(lr).loss for lr in cands}
    if all(math.isinf(v) for v in scores.values()):  # everything diverged: lower, once
        cands = [*cands, *lattice(min(cands) / 10**0.5 * (1 + 1e-9), 2)]
        scores.update({lr: run(lr).loss for lr in cands[-2:]})
    best = min(cands, key=lambda lr: scores[lr])
    above = 0  # the top candidate won: the lattice goes up while it keeps winning
    while best == cands[0] and scores[best] < start - TRAINS * abs(start):
        up = lattice(cands[0] * 10**0.5 * (1 + 1e-9), 1)[0]  # the lattice point, exactly
        if up > END_LR * (1 + 1e-9) or allowed - out.steps_used < orders * probe_cost(learn, steps):
            break
        cands.insert(0, up)
        scores[up] = run(up).loss
        above += 1
        if not scores[up] < scores[best]:
            break
        best = up
    out.candidates = cands
    if math.isinf(scores[best]):
        out.reason = (f"every probe diverged ({', '.join(f'{c:.3g}' for c in cands)}) in "
                      f"{steps} steps: give lr_max")  # fmt: skip
        return
    why = f"lowest held-back loss ({scores[best]:.4g}) of {len(cands)} probes of {steps} steps"
    if orders > 1:
        why += f" x {orders} data orders"
    if above:
        why += f" ({above} above the window: its top had won)"
    elif len(cands) < len(window):
        why += f" (a budget of {budget:g} x {total} steps: {len(cands)} of {len(window)})"
    if scores[best] < start - TRAINS * abs(start):
        # a point above that lost only says "not higher": a probe's warm-up is too short
        # to take what the run's can, so it must not push the pick down (``between``)
        ranked = cands[1:] if above and best != cands[0] else cands
        peak = between(ranked, [scores[c] for c in ranked])
        out.lr_max = peak
        out.reason = (f"{peak:.3g}: {why} at {best:.3g}, moved towards the neighbour that "
                      "probed next best" if peak != best else f"{best:.3g}: {why}")  # fmt: skip
        return
    ok = [c for c in cands if scores[c] <= start + TRAINS * abs(start)]
    out.lr_max, out.trained = max(ok or [best]), False
    length = f"{steps} steps" + (f" x {orders} data orders" if orders > 1 else "")
    out.reason = (f"{out.lr_max:.3g}: no probe trained in {length} (best held-back loss "
                  f"{scores[best]:.4g}, the model as it is {start:.4g}); the largest that did "
                  "not get worse is used, and the run is watched for collapse")  # fmt: skip
    log.warning("lr_max=auto: %s", out.reason)
