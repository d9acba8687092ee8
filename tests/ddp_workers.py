"""Functions run in each process of a 2-process gloo group by tests/test_distributed.py.

They live in a module of their own so that ``torch.multiprocessing.spawn`` can import
them in the child processes. Each writes what it saw to ``out/rank{r}.pt``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from onecycle import distributed as D
from onecycle.callbacks import Callback, NonFiniteLossError
from onecycle.checkpoint import Checkpoint, CheckpointError
from onecycle.data import Loader
from onecycle.learner import Learner, accuracy, sgd

N, DIM, CLASSES = 256, 8, 3


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, DIM, generator=g)
    w = torch.randn(DIM, CLASSES, generator=g)
    return x, (x @ w).argmax(1)


def model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def learner(bs: int, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
            cbs=(), shuffle: bool = True) -> Learner:  # fmt: skip
    if x is None or y is None:
        x, y = data()
    return Learner(
        model(), Loader(x, y, bs, shuffle=shuffle, seed=3), Loader(x, y, 64, shuffle=False),
        loss_func=F.cross_entropy, opt_func=sgd, metrics=[accuracy], wd=1e-2, cbs=list(cbs),
    )  # fmt: skip


def _save(out: str, what: dict) -> None:
    torch.save(what, Path(out) / f"rank{D.rank()}.pt")


def train(out: str, bs: int, epochs: int) -> None:
    """1cycle with cyclical momentum; weights, hyper-parameter trace and metrics."""
    learn = learner(bs)
    learn.fit_one_cycle(epochs, lr_max=0.5)
    _save(out, {
        "weights": {k: v.clone() for k, v in learn.model.state_dict().items()},
        "hypers": learn.recorder.hypers, "rows": learn.recorder.rows,
        "losses": learn.recorder.losses, "n_iter": learn.n_iter,
        "valid": learn.validate(), "world": D.world_size(),
    })  # fmt: skip


def lr_find(out: str, bs: int) -> None:
    learn = learner(bs)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = learn.lr_find(num_it=60)
    after = learn.model.state_dict()
    _save(out, {
        "result": res.to_dict(),
        "restored": all(torch.equal(before[k], after[k]) for k in before),
    })  # fmt: skip


class _Fail(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, learn: Learner) -> None:
        if learn.scheduler.step_count == self.at:
            raise RuntimeError("injected crash")


def checkpointed(out: str, folder: str, bs: int, epochs: int, crash_at: int | None) -> None:
    """1cycle with a checkpoint every 3 steps; ``crash_at``: every rank fails there (a
    kill of the whole job); ``None``: resume from the newest checkpoint in ``folder``."""
    cbs = [Checkpoint(folder, every=3)] + ([_Fail(crash_at)] if crash_at else [])
    learn = learner(bs, cbs=cbs)
    try:
        learn.fit_one_cycle(epochs, lr_max=0.5, resume=None if crash_at else "auto")
        status = "done"
    except RuntimeError as e:
        status = str(e)
    _save(out, {
        "status": status,
        "weights": {k: v.clone() for k, v in learn.model.state_dict().items()},
        "hypers": learn.recorder.hypers,
    })  # fmt: skip


def nan_on_rank1(out: str, bs: int) -> None:
    """Rank 1's shard holds a NaN input at its 4th batch: both ranks must stop."""
    x, y = data()
    x = x.clone()
    x[2 * 3 * bs + 1] = float("nan")  # unshuffled: rank 1 reads rows 1, 3, 5, ...
    learn = learner(bs, x, y, shuffle=False)
    try:
        learn.fit(2, 0.1)
        status = "no error"
    except NonFiniteLossError as e:
        status = f"NonFiniteLossError: {e}"
    _save(out, {"status": status, "steps": learn.scheduler.step_count})


def bad_loader(out: str) -> None:
    x, y = data()
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    learn = Learner(model(), dl, loss_func=F.cross_entropy)
    try:
        learn.fit(1, 0.1)
        status = "no error"
    except ValueError as e:
        status = str(e)
    _save(out, {"status": status})


def resume_other_world(out: str, folder: str, bs: int) -> None:
    learn = learner(bs)
    try:
        learn.fit_one_cycle(2, lr_max=0.5, resume=folder)
        status = "no error"
    except (CheckpointError, ValueError) as e:
        status = str(e)
    _save(out, {"status": status})


class _RankClock(Callback):
    """A fake clock whose batches take ``batch`` seconds (different on each rank)."""

    def __init__(self, batch: float) -> None:
        self.now, self.batch = 0.0, batch

    def __call__(self) -> float:
        return self.now

    def before_batch(self, learn: Learner) -> None:
        self.now += self.batch


def budgeted(out: str, bs: int, budget: float) -> None:
    """1cycle over a time budget; rank r's batches take 1 + r/2 seconds: the ranks must
    agree on the elapsed time (their mean) and stop at the same step."""
    clock = _RankClock(1.0 + D.rank() / 2)
    learn = learner(bs, cbs=[clock])
    learn.clock = clock
    learn.fit_one_cycle(100, lr_max=0.5, budget=budget)
    _save(out, {
        "weights": {k: v.clone() for k, v in learn.model.state_dict().items()},
        "hypers": learn.recorder.hypers, "report": learn.budget.report(), "now": clock.now,
    })  # fmt: skip
