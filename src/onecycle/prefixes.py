"""Prefixes of the real run, and the cool-down branches that score them.

``lr_max="auto"`` (``onecycle.auto``) ranks candidate peaks on *prefixes of the run it
serves*: each candidate trains on its own 1cycle over all of the run's steps (the real
warm-up, the real momentum cycle, the real batches in the real order), for the first
few percent of it. A prefix is scored by a **cool-down branch**: from where the prefix
stands, the LR anneals to zero over a quarter of the prefix's length (momentum to its
end value), and the loss on a validation split that no step trains on is measured. The
branch is thrown away; the prefix is kept (``Prefix.state``, an in-memory checkpoint of
``onecycle.checkpoint.capture``) and can be continued to a longer prefix, or resumed as
the run itself, which then equals a plain run at that peak bit for bit.

Why a branch, and not the loss at the prefix's end: mid-run, a high LR holds the loss up
(the iterate bounces across the valley); only the decay shows what it reached. Scores
of runs at different LRs compare after a cool-down, not before (Hägele et al. 2024,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations").

Everything a prefix or branch changes is put back (``probes.side_run``): the Learner
after ``advance`` is the Learner before it.

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> from onecycle import schedules as S
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(1024, 4, generator=g); y = (x[:, 0] > 0).long()
>>> learn = Learner(torch.nn.Linear(4, 2), Loader(x, y, 32),
...                 loss_func=torch.nn.functional.cross_entropy)
>>> rest, held = validation_split(learn.train_data, 4)
>>> learn.train_data = rest
>>> spec = lambda lr: {"lr": [S.one_cycle(lr)], "momentum": S.one_cycle_moms()}
>>> p = Prefix(0.1)
>>> before = learn.model.weight.clone()
>>> score = advance(learn, p, 10, n_epoch=2, lrs=[0.1], spec=spec(0.1), total=56, held=held)
>>> p.steps, score < float("inf"), torch.equal(learn.model.weight, before)
(10, True, True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onecycle import batch as B
from onecycle import schedules as S
from onecycle.callbacks import Callback, CancelFit, Recorder
from onecycle.checkpoint import capture
from onecycle.data.loader import Loader
from onecycle.errors import ConfigError
from onecycle.probes import side_run
from onecycle.scheduler import Scheduler, momentum_key

if TYPE_CHECKING:
    from onecycle.loop import Loop

__all__ = ["BRANCH", "Prefix", "advance", "branch_steps", "held_loss", "validation_split"]

BRANCH = 0.25
"""The fraction of a prefix that its cool-down branch anneals over (at least
``MIN_BRANCH`` steps): Hägele et al. found a cool-down of 10-20% of the steps matches a
full cosine; a quarter ranks peaks in our fidelity runs (docs/results/auto_lr_v6.md)."""
MIN_BRANCH = 2


def branch_steps(to: int) -> int:
    """The cool-down branch's steps for a prefix of ``to`` steps: ``BRANCH`` of it, at
    least ``MIN_BRANCH`` (``advance`` caps it at the steps the run has left)."""
    return max(MIN_BRANCH, round(BRANCH * to))


@dataclass
class Prefix:
    """One candidate peak's run so far: ``steps`` optimizer steps of its 1cycle, its state
    there (``capture``'s in-memory checkpoint, None before the first step), and the
    score of each cool-down branch taken (``{prefix steps: held-back loss}``; inf when
    the loss went non-finite)."""

    lr_max: float
    steps: int = 0
    state: dict[str, Any] | None = field(default=None, repr=False)
    scores: dict[int, float] = field(default_factory=dict)
    diverged: bool = False

    @property
    def score(self) -> float:
        """The latest branch's score (inf before any)."""
        return self.scores[max(self.scores)] if self.scores else math.inf


def validation_split(data: Any, n_batches: int) -> tuple[Any, list[Any]]:
    """Hold back ``n_batches`` batches' worth of samples of a ``Loader`` for scoring: a
    loader over the other samples (the run trains on it, prefixes and all) and the held
    samples as plain batches. Drawn from the loader's epoch-0 order, so the same loader
    (same data and seed) gives the same split again: a resumed run trains on the same
    samples. Any other iterable: ``(data, [])`` (see ``onecycle.auto``)."""
    if not isinstance(data, Loader):
        return data, []
    first = data.shard(data.rank, data.world_size, even=data.even)
    first.epoch, first.batches_done = 0, 0
    return first.held_out(n_batches)


def held_loss(learn: Loop, held: Sequence[Any]) -> float:
    """Mean loss per sample on ``held`` (eval mode, no gradient); inf if not finite."""
    results = [learn._do_validate([b]) for b in held]
    sizes = [B.batch_size(*learn.split_batch(b)) for b in held]
    loss = sum(r["valid_loss"] * n for r, n in zip(results, sizes)) / sum(sizes)
    return loss if math.isfinite(loss) else math.inf


class _Segment(Callback):
    """Stop a prefix at step ``to``: keep its state, then cool down for ``branch`` steps
    (a scheduler of its own: the LR from where it stands to zero along a half cosine,
    momentum linearly to ``end_mom``) and score on ``held``."""

    order = 95  # after the Recorder has recorded the step: the state's history holds it

    def __init__(self, to: int, branch: int, held: Sequence[Any], end_mom: float | None) -> None:
        self.to, self.branch, self.held, self.end_mom = to, branch, held, end_mom
        self.state: dict[str, Any] | None = None
        self.score = math.inf
        self.diverged = False
        self._k = -1  # cool-down steps taken; -1: still on the prefix

    def _start(self, learn: Loop) -> None:
        assert learn.opt is not None
        self.state = capture(learn, epoch=learn.epoch, batches_done=learn.iter + 1)
        # the optimizer's state_dict holds its live tensors: the next steps would change it
        self.state["optimizer"] = copy.deepcopy(self.state["optimizer"])
        self._k = 0
        if self.branch == 0:
            self._finish(learn)
        # the branch: its own schedules from the values the next step would have used
        groups = learn.opt.param_groups
        spec: dict[str, Any] = {"lr": [S.Cos(float(g["lr"]), 0.0) for g in groups]}
        key = momentum_key(learn.opt)
        if key is not None and self.end_mom is not None:
            spec["momentum"] = [S.Lin(_mom(g, key), self.end_mom) for g in groups]
        learn.scheduler = Scheduler(learn.opt, spec, self.branch + 1)

    def after_loss(self, learn: Loop) -> None:
        if not math.isfinite(float(learn.loss_global.detach().float())):
            self.diverged = True
            raise CancelFit

    def after_step(self, learn: Loop) -> None:
        assert learn.scheduler is not None
        if self._k < 0:
            if learn.scheduler.step_count >= self.to:
                self._start(learn)
            return
        self._k += 1
        if self._k >= self.branch:
            self._finish(learn)

    def _finish(self, learn: Loop) -> None:
        self.score = held_loss(learn, self.held)
        learn.model.train()
        raise CancelFit


def _mom(group: Mapping[str, Any], key: str) -> float:
    return float(group["momentum"] if key == "momentum" else group["betas"][0])


def advance(
    learn: Loop,
    prefix: Prefix,
    to: int,
    *,
    n_epoch: int,
    lrs: Sequence[float],
    spec: Mapping[str, Any],
    total: int,
    held: Sequence[Any],
    wd: float | None = None,
    end_mom: float | None = None,
    branch: int | None = None,
    cbs: Sequence[Callback] = (),
) -> float:
    """Continue ``prefix`` to ``to`` optimizer steps of its run (``n_epoch`` epochs of
    ``total`` steps at ``lrs``, ``schedules=spec``: exactly what ``learn.fit`` runs), keep its
    state there, then score a cool-down branch of ``branch`` steps (default ``BRANCH`` x
    ``to``) on ``held``. Returns the score (inf if the loss went non-finite, and the
    prefix is then marked ``diverged``). Everything is put back afterwards; the
    Recorder's history of the prefix travels in ``prefix.state``."""
    if to <= prefix.steps or to > total:
        raise ConfigError("to", to, f"a step in [{prefix.steps}, {total}]")
    if not held:
        raise ConfigError("held", "no batches", "held-back batches to score on")
    n_branch = branch_steps(to) if branch is None else branch
    n_branch = min(n_branch, total - to)
    seg = _Segment(to, n_branch, held, end_mom)
    with side_run(learn, cbs):
        saved_rec = learn.recorder
        rec = learn.recorder = Recorder()  # the prefix's own history (restore() loads it)
        try:
            learn.fit(n_epoch, list(lrs), schedules=spec, wd=wd, cbs=[seg, rec], _total_steps=total,
                      resume=prefix.state)  # fmt: skip
        finally:
            learn.recorder = saved_rec
    if seg.diverged:
        prefix.diverged, prefix.scores[to] = True, math.inf
        return math.inf
    if seg.state is None:  # the run ended before ``to`` (cannot happen when to <= total)
        raise ConfigError("to", to, f"at most the run's {total} steps")
    prefix.state, prefix.steps = seg.state, to
    prefix.scores[to] = seg.score
    return seg.score
