"""Smith's other two sweeps (arXiv:1803.09820, section 4): weight decay and momentum.

Each runs a short 1cycle probe (``onecycle.probes.probe``) at a chosen ``lr_max`` for a few
weight decays (``wd_range_test``, what ``wd="auto"`` runs) or momentum ranges
(``momentum_range_test``) and keeps the lowest held-back loss; ``too_close`` says when the
best two cannot be told apart within their batch-to-batch noise.

>>> a = ProbeResult(0.1, 8, 0.30, batch_losses=(0.30, 0.31, 0.29, 0.30))
>>> b = ProbeResult(0.1, 8, 0.40, batch_losses=(0.41, 0.40, 0.39, 0.40))
>>> too_close([a, b], 0) is None  # 0.30 against 0.40 on every batch: clearly apart
True
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onecycle.callbacks import Callback
from onecycle.candidates import MIN_PROBE_STEPS, AutoResult
from onecycle.errors import ConfigError, check_int
from onecycle.probes import EVAL_COST, ProbeResult, held_count, probe, probe_cost

if TYPE_CHECKING:
    from onecycle.loop import Loop

__all__ = ["momentum_range_test", "too_close", "wd_range_test"]

log = logging.getLogger("onecycle.auto")  # the messages users know from wd="auto"


def _pick(
    learn: Loop, values: Sequence[Any], run: Any, what: str
) -> tuple[Any, list[ProbeResult], float]:
    results = [run(v) for v in values]
    used = sum(probe_cost(learn, r.steps) for r in results)
    best = min(range(len(values)), key=lambda i: results[i].loss)
    if math.isinf(results[best].loss):
        raise ConfigError(what, "auto", f"an explicit value: every {what} probe diverged")
    return values[best], results, used


def _probe_steps(learn: Loop, budget: float, total_steps: int, n: int) -> int:
    """Each of ``n`` probes' steps: an equal share of ``budget`` x ``total_steps``, less its
    held-back evaluation, at least ``MIN_PROBE_STEPS``."""
    return max(MIN_PROBE_STEPS, int(budget * total_steps / n - EVAL_COST * held_count(learn)))


def wd_range_test(
    learn: Loop,
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
    steps = _probe_steps(learn, budget, total_steps, len(values))
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
    learn: Loop,
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
    steps = _probe_steps(learn, budget, total_steps, len(values))
    m, probes, used = _pick(
        learn, [tuple(v) for v in values],
        lambda v: probe(learn, lr_max, steps, moms=v, wd=wd, cbs=cbs),
        "moms",
    )  # fmt: skip
    why = f"lowest held-back loss of moms in {[list(v) for v in values]} after {steps} steps"
    peak = lr_max if isinstance(lr_max, float) else float(list(lr_max)[-1])
    return m, AutoResult(peak, why, None, [], probes, used, total_steps)
