"""Side runs: the range test and short probe runs, through the Learner's own loop.

A side run is ``learn.fit`` with only the callbacks that affect the update (clipping,
accumulation, mixed precision: ``Callback.affects_update``), no validation, and
everything put back afterwards: weights, optimizer, random state, loader position and the
Learner's loop state (``side_run``). On top of it:

- ``lr_sweep``: Smith's range test, with the momentum held at 1cycle's peak value;
- ``probe``: a short 1cycle from the current weights, scored by the loss on held-back
  training samples that it never trains on (``Loader.held_out``).

``onecycle.auto`` reads the sweep and ranks the probes; this module only runs them.

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(1024, 4); y = (x[:, 0] > 0).long()
>>> ce = torch.nn.functional.cross_entropy
>>> learn = Learner(torch.nn.Linear(4, 2), Loader(x, y, 32), loss_func=ce)
>>> before = learn.model.weight.clone()
>>> p = probe(learn, 0.1, steps=20)
>>> p.steps, p.loss < probe(learn, 0.1, steps=0).loss, torch.equal(learn.model.weight, before)
(20, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from onecycle import batch as B
from onecycle import schedules as S
from onecycle.callbacks import Callback, CancelBatch, CancelFit
from onecycle.data.loader import Loader
from onecycle.errors import ConfigError, check_int
from onecycle.range_test import RangeTestResult, Snapshot, check_sweep
from onecycle.scheduler import momentum_key
from onecycle.suggest import suggest

if TYPE_CHECKING:
    from onecycle.loop import Loop

__all__ = [
    "ProbeResult", "held_count", "learner_snapshot", "lr_sweep", "probe", "probe_cost",
    "reorderable", "side_run",
]  # fmt: skip

# Held-back batches per probe score (fewer on tiny data sets: a tenth of an epoch).
HELD_BATCHES = 8
# A held-back batch costs a forward pass: about a third of a training step.
EVAL_COST = 1 / 3
# A probe's other data orders: its ``Loader``'s seed moved this far on per order.
ORDER_STRIDE = 1000

# the Learner's loop state that a side run (sweep or probe) may change and must put back
_LOOP_STATE = (
    "cbs", "metrics", "valid_data", "scheduler", "epoch", "n_epoch", "iter", "n_iter", "accumulate",
    "autocast", "scaler", "valid_results", "step_values", "fit_signature", "fit_plan",
    "epoch_completed", "batch", "pred", "loss", "loss_global", "_decay",
)  # fmt: skip


@dataclass(frozen=True)
class ProbeResult:
    """One short run: its hyper-parameters, its length, and its held-back loss (inf if it
    diverged) and metrics; ``batch_losses``: the loss on each held-back batch (the same
    batches for every probe of a Learner, so two probes compare batch by batch).
    ``orders``: how many data orders it was run in, ``steps`` each, its scores averaged
    (``onecycle.auto.rank_by_probes``)."""

    lr_max: float
    steps: int
    loss: float
    wd: float | None = None
    moms: tuple[float, float, float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    batch_losses: tuple[float, ...] = ()
    orders: int = 1

    def to_dict(self) -> dict[str, Any]:
        loss = None if math.isinf(self.loss) else self.loss
        moms = list(self.moms) if self.moms else None
        return {"lr_max": self.lr_max, "steps": self.steps, "loss": loss, "wd": self.wd,
                "moms": moms, "metrics": self.metrics,
                "batch_losses": list(self.batch_losses), "orders": self.orders}  # fmt: skip


def learner_snapshot(learn: Loop) -> Snapshot:
    """A ``Snapshot`` of what a fit of ``learn`` changes: its model, its optimizer (made
    now if it has none yet) and its training data's position, after sharding under DDP
    (so that the restored loader is the sharded one)."""
    if learn.opt is None:
        learn._make_opt([1e-3] * len(learn.param_groups))
    assert learn.opt is not None
    learn._setup_distributed()
    return Snapshot(learn.model, learn.opt, learn.train_data)


@contextmanager
def side_run(learn: Loop, cbs: Sequence[Callback] = ()) -> Iterator[None]:
    """Run ``learn.fit`` as a sweep or probe: only the callbacks that affect the update
    (from ``learn.cbs`` and ``cbs``), no validation, and everything put back afterwards."""
    snap = learner_snapshot(learn)
    missing = object()
    saved = {k: getattr(learn, k, missing) for k in _LOOP_STATE}
    learn.cbs = [c for c in [*learn.cbs, *cbs] if getattr(c, "affects_update", False)]
    learn.valid_data = None
    try:
        yield
    finally:
        snap.restore()
        for k, v in saved.items():
            if v is not missing:
                setattr(learn, k, v)
        learn._cb_table = learn._bind(learn.cbs)


def _epochs_for(learn: Loop, steps: int) -> int:
    per_epoch = math.ceil(len(learn.train_data) / max(1, learn.accumulate))  # type: ignore[arg-type]
    return max(1, math.ceil(steps / max(1, per_epoch)))


def _peak_momentum(learn: Loop, moms: Sequence[float] | None) -> dict[str, S.Schedule]:
    assert learn.opt is not None
    if momentum_key(learn.opt) is None:
        return {}
    return {"momentum": S.const(float((moms or learn.moms)[1]))}


class _Sweep(Callback):
    """Record (lr, loss) per optimizer step; stop at ``num_it`` steps, a non-finite loss,
    or (``stop_div``) a smoothed loss above ``div_factor`` x its best."""

    order = -10

    def __init__(
        self, num_it: int, smooth: float, stop_div: bool, div_factor: float,
        valid: Iterable[Any] | None = None,
    ) -> None:  # fmt: skip
        self.num_it, self.smooth, self.stop_div, self.div_factor = (
            num_it, smooth, stop_div, div_factor
        )  # fmt: skip
        self.valid = valid
        self.valid_losses: list[float] = []
        self.valid_metrics: list[float] = []
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stop_reason = f"completed {num_it} steps"
        self._sum, self._n, self._avg, self._best = 0.0, 0, 0.0, math.inf

    def after_loss(self, learn: Loop) -> None:
        value = float(learn.loss_global.detach().float())
        if not math.isfinite(value):
            lr = float(learn.opt.param_groups[-1]["lr"])  # type: ignore[union-attr]
            self.lrs.append(lr)
            self.losses.append(value)
            self.smoothed.append(math.nan)
            self.stop_reason = f"non-finite loss ({value}) at lr={lr:.3g}"
            raise CancelFit
        self._sum += value
        self._n += 1

    def after_step(self, learn: Loop) -> None:
        lr = float(learn.step_values["lr"][-1])
        loss = self._sum / max(1, self._n)
        self._sum, self._n = 0.0, 0
        i = len(self.losses)
        self.lrs.append(lr)
        self.losses.append(loss)
        self._avg = self.smooth * self._avg + (1 - self.smooth) * loss
        s = self._avg / (1 - self.smooth ** (i + 1))
        self.smoothed.append(s)
        if self.valid is not None:  # Smith's validation curve: a pass after every step
            results = learn._do_validate(self.valid)
            learn.model.train()
            self.valid_losses.append(results.pop("valid_loss"))
            if results:
                self.valid_metrics.append(next(iter(results.values())))
        self._best = min(self._best, s)
        limit = self._best + (self.div_factor - 1) * max(abs(self._best), 1e-12)
        if self.stop_div and i > 0 and s > limit:
            self.stop_reason = (
                f"diverged at lr={lr:.3g} (smoothed loss > {self.div_factor:g}x best)"
            )
            raise CancelFit
        if len(self.losses) >= self.num_it:
            raise CancelFit


def lr_sweep(
    learn: Loop,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    mode: Literal["exp", "linear"] = "exp",
    smooth: float = 0.98,
    stop_div: bool = True,
    div_factor: float = 4.0,
    *,
    moms: Sequence[float] | None = None,
    wd: float | None = None,
    cbs: Sequence[Callback] = (),
    valid_batches: Iterable[Any] | None = None,
    metric: Callable[[Any, Any], torch.Tensor] | None = None,
) -> RangeTestResult:
    """The LR range test through ``learn.fit``: the same update rule as training, the
    momentum at 1cycle's peak (``moms[1]``; default the Learner's ``moms``), everything
    restored. The sweep's LRs apply to the last param group; the others keep their ratio.
    ``valid_batches``: the validation loss (and ``metric``, default the Learner's first
    metric) after every step.
    """
    start_lr, end_lr, num_it, smooth, div_factor = check_sweep(
        start_lr, end_lr, num_it, mode, smooth, div_factor
    )
    if metric is not None and valid_batches is None:
        name = getattr(metric, "__name__", metric)
        raise ConfigError("metric", name, "None unless valid_batches are given (it runs on them)")
    sweeper = _Sweep(num_it, smooth, stop_div, div_factor, valid_batches)
    with side_run(learn, cbs):
        if metric is not None:
            learn.metrics = [metric]
        assert learn.opt is not None
        ref = float(learn.opt.param_groups[-1]["lr"]) or 1.0
        ratios = [float(g["lr"]) / ref for g in learn.opt.param_groups]
        sweep = S.Exp if mode == "exp" else S.Lin
        spec: dict[str, Any] = {"lr": [sweep(start_lr * r, end_lr * r) for r in ratios]}
        spec.update(_peak_momentum(learn, moms))
        learn.fit(_epochs_for(learn, num_it), [start_lr * r for r in ratios], schedules=spec,
                  wd=wd, cbs=[sweeper], _total_steps=num_it)  # fmt: skip
    from onecycle.range_test import _adaptive

    res = RangeTestResult(sweeper.lrs, sweeper.losses, sweeper.smoothed, sweeper.stop_reason,
                          mode, ratios, sweeper.valid_losses, sweeper.valid_metrics)  # fmt: skip
    analysis = suggest(res.lrs, res.losses, res.stop_reason, adaptive=_adaptive(learn.opt))
    res.suggestions, res.recommended = analysis.suggestions, analysis.recommended
    res.analysis_curve = analysis.curve
    return res


class _Probe(Callback):
    """Stop after ``steps`` optimizer steps, or at once on a non-finite loss. With
    ``held`` empty, hold back the first ``n_held`` batches of the first epoch (the
    fallback for loaders that cannot set samples aside: see ``probe``)."""

    order = -10

    def __init__(self, steps: int, n_held: int, held: list[Any] | None = None) -> None:
        self.steps, self.n_held = steps, n_held
        self.held: list[Any] = list(held or [])
        self.diverged = False
        self.taken = 0

    def before_batch(self, learn: Loop) -> None:
        if len(self.held) < self.n_held and learn.epoch == 0:
            self.held.append(learn.batch)
            raise CancelBatch
        if self.steps == 0:  # only the held-back loss of the weights as they are
            raise CancelFit

    def after_loss(self, learn: Loop) -> None:
        if not math.isfinite(float(learn.loss_global.detach().float())):
            self.diverged = True
            raise CancelFit

    def after_step(self, learn: Loop) -> None:
        self.taken += 1
        if self.taken >= self.steps:
            raise CancelFit


def _set_aside(data: Any, n_held: int) -> tuple[Any, list[Any]]:
    """A ``Loader``'s held-back samples, set aside for every epoch of the probe
    (``Loader.held_out``); any other iterable: itself and no batches (``_Probe`` then
    skips its first batches in the first epoch only, so a probe longer than an epoch of
    a reshuffling loader may train on them)."""
    if isinstance(data, Loader):
        try:
            return data.held_out(n_held)
        except ConfigError:  # too few samples to set aside a batch and keep one
            pass
    return data, []


def reorderable(learn: Loop) -> bool:
    """Whether ``probe(order=k)`` has other data orders for ``learn``: its training data
    is a ``Loader`` that can set the held-back samples aside."""
    data = learn.train_data
    if not isinstance(data, Loader):
        return False
    n = len(data.x) if data.indices is None else len(data.indices)
    return (held_count(learn) + 1) * data.batch_size * data.world_size <= n


def held_count(learn: Loop) -> int:
    return max(1, min(HELD_BATCHES, len(learn.train_data) // 10))  # type: ignore[arg-type]


def probe(
    learn: Loop,
    lr_max: float | Sequence[float],
    steps: int,
    *,
    moms: tuple[float, float, float] | None = None,
    wd: float | None = None,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    cbs: Sequence[Callback] = (),
    order: int = 0,
) -> ProbeResult:
    """A short 1cycle of ``steps`` optimizer steps at ``lr_max`` (a float, or one per param
    group), everything restored afterwards; scored by the loss on held-back training
    batches: with ``onecycle.data.Loader``, the samples of its next few batches, set
    aside for every epoch of the probe; with another loader, its first few batches,
    skipped in the probe's first epoch. ``steps=0``: the held-back loss of the weights
    as they are. ``order``: which order of the training data the probe trains in: 0 is
    the loader's own, ``k`` another one, the same for every probe with that ``k``, on the
    same held-back samples (a ``Loader`` whose samples could be set aside: its seed moved
    ``ORDER_STRIDE * k`` on; any other loader has only its own order)."""
    steps = check_int("steps", steps, minimum=0)
    order = check_int("order", order, minimum=0)
    lrs = learn.group_values(lr_max if not isinstance(lr_max, Sequence) else list(lr_max),
                             "lr_max")  # fmt: skip
    m = tuple(moms if moms is not None else learn.moms)
    n_held = held_count(learn)
    with side_run(learn, cbs):
        assert learn.opt is not None
        data = learn.train_data
        rest, held = _set_aside(data, n_held)
        if order and held and isinstance(rest, Loader):  # ``rest``: a new Loader, its own
            rest.seed += ORDER_STRIDE * order  # seed drawing the order (never the user's)
        cb = _Probe(steps, n_held, held)
        spec: dict[str, Any] = {"lr": [S.one_cycle(v, div, div_final, pct_start) for v in lrs]}
        if momentum_key(learn.opt) is not None:
            spec["momentum"] = S.one_cycle_moms(m, pct_start)  # type: ignore[arg-type]
        learn.train_data = rest
        try:
            n_epoch = _epochs_for(learn, steps + (0 if held else n_held))
            learn.fit(n_epoch, lrs, schedules=spec, wd=wd, cbs=[cb], _total_steps=max(1, steps))
        finally:
            learn.train_data = data
        per_batch: list[float] = []
        if cb.diverged or not cb.held:
            loss, metrics = math.inf, {}
        else:
            results = [learn._do_validate([b]) for b in cb.held]
            sizes = [B.batch_size(*learn.split_batch(b)) for b in cb.held]
            per_batch = [r.pop("valid_loss") for r in results]
            loss = sum(v * n for v, n in zip(per_batch, sizes)) / sum(sizes)
            metrics = {k: sum(r[k] * n for r, n in zip(results, sizes)) / sum(sizes)
                       for k in results[0]}  # fmt: skip
            if not math.isfinite(loss):
                loss, per_batch = math.inf, []
    return ProbeResult(lrs[-1], steps, loss, wd, m, metrics,  # type: ignore[arg-type]
                       tuple(per_batch))  # fmt: skip


def probe_cost(learn: Loop, steps: int) -> float:
    return steps + EVAL_COST * held_count(learn)
