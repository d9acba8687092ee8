"""What a Learner is, at a glance: ``learn.summary()`` (layers, output shapes, parameter
counts, trainable or frozen, the optimizer's groups) and the Learner's ``repr`` (a few
lines: the model, the data, the optimizer, where the last fit got to).

Both are functions of the Learner, bound as its methods (``Learner.summary = summary``).

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
>>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> learn = Learner(model, Loader(x, y, 16), loss_func=torch.nn.functional.cross_entropy)
>>> print(learn.summary())  # doctest: +NORMALIZE_WHITESPACE
Sequential: 42 parameters, 42 trainable, 0 frozen; input [16, 2]
layer     type        output shape    params  trainable
0         Linear      [16, 8]             24  yes
1         ReLU        [16, 8]              0
2         Linear      [16, 2]             18  yes
optimizer: sgd, made at the first fit (1 param group, wd 0.0005 decoupled)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from onecycle import batch as B
from onecycle.data.loader import to_device

__all__ = ["Summary", "describe", "summary"]


class _Learner(Protocol):
    """What the summary and the repr read from a Learner."""

    model: nn.Module
    opt: torch.optim.Optimizer | None
    opt_func: Callable[..., Any]
    param_groups: list[list[nn.Parameter]]
    train_data: Iterable[Any]
    valid_data: Iterable[Any] | None
    loss_func: Any
    metrics: Sequence[Any]
    cbs: Sequence[Any]
    wd: float
    device: torch.device
    recorder: Any
    scheduler: Any
    split_batch: Callable[[Any], tuple[Any, Any]]
    autocast: Callable[[], AbstractContextManager[Any]]


@dataclass
class Summary:
    """``learn.summary()``: one row per layer (``name, type, shape, params, trainable``),
    the totals, and the optimizer's groups; ``str()`` is the table."""

    model: str
    rows: list[tuple[str, str, str, int, str]]
    total: int
    trainable: int
    input_shape: str
    optimizer: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = (f"{self.model}: {self.total:,} parameters, {self.trainable:,} trainable, "
                f"{self.total - self.trainable:,} frozen; input {self.input_shape}")  # fmt: skip
        w = max([5, *(len(r[0]) for r in self.rows)]) + 2
        t = max([4, *(len(r[1]) for r in self.rows)]) + 2
        lines = [head, f"{'layer':<{w}}{'type':<{t}}{'output shape':<14}{'params':>8}  trainable"]
        for name, kind, shape, n, trainable in self.rows:
            lines.append(f"{name:<{w}}{kind:<{t}}{shape:<14}{n:>8,}  {trainable}".rstrip())
        return "\n".join(lines + self.optimizer)

    __repr__ = __str__


def _name(f: Any) -> str:
    f = getattr(f, "func", f)  # functools.partial
    return getattr(f, "__name__", type(f).__name__)


def _shape(out: Any) -> str:
    out = B.prediction(out) if not isinstance(out, torch.Tensor) else out
    return str(list(out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__


@torch.no_grad()
def summary(learn: _Learner, x: Any = None) -> Summary:
    """Each layer's output shape (one forward pass on ``x``, default the first batch of
    ``valid_data`` or else ``train_data``, in evaluation mode; the model's mode, the
    random state and the loader's position are put back), its parameters and whether they
    train; the totals; and the optimizer's param groups."""
    if x is None:
        data = learn.valid_data if learn.valid_data is not None else learn.train_data
        state = data.state_dict() if hasattr(data, "state_dict") else None
        rng = torch.get_rng_state()
        batch = next(iter(data))
        torch.set_rng_state(rng)
        if state is not None:
            data.load_state_dict(state)  # type: ignore[attr-defined]
        x = learn.split_batch(to_device(batch, learn.device))[0]
    else:
        x = to_device(x, learn.device)
    shapes: dict[nn.Module, str] = {}
    leaves = [(n, m) for n, m in learn.model.named_modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, _shape(o)))
             for _, m in leaves]  # fmt: skip
    was_training = learn.model.training
    learn.model.eval()
    try:
        with learn.autocast():
            B.call_model(learn.model, x)
    finally:
        learn.model.train(was_training)
        for h in hooks:
            h.remove()
    rows = []
    for name, m in leaves:
        params = list(m.parameters(recurse=False))
        n = sum(p.numel() for p in params)
        trainable = "" if not params else "yes" if all(p.requires_grad for p in params) else (
            "no" if not any(p.requires_grad for p in params) else "partly")  # fmt: skip
        rows.append((name or "(model)", type(m).__name__, shapes.get(m, "-"), n, trainable))
    total = sum(p.numel() for p in learn.model.parameters())
    trainable = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    return Summary(type(learn.model).__name__, rows, total, trainable, _shape(x),
                   _optimizer_lines(learn))  # fmt: skip


def _optimizer_lines(learn: _Learner) -> list[str]:
    n = len(learn.param_groups)
    if learn.opt is None:
        return [f"optimizer: {_name(learn.opt_func)}, made at the first fit ({n} param "
                f"group{'s' * (n > 1)}, wd {learn.wd:g} decoupled)"]  # fmt: skip
    lines = [f"optimizer: {type(learn.opt).__name__}, {len(learn.opt.param_groups)} param "
             f"group(s), wd {learn.wd:g} decoupled"]  # fmt: skip
    for i, g in enumerate(learn.opt.param_groups):
        n_params = sum(p.numel() for p in g["params"])
        mom = g.get("momentum", g.get("betas", (None,))[0])
        frozen = sum(p.numel() for p in g["params"] if not p.requires_grad)
        lines.append(f"  group {i}: {n_params:,} parameters ({frozen:,} frozen), lr {g['lr']:.3g}"
                     + (f", momentum {mom:.3g}" if mom is not None else "")
                     + f", wd {g.get('wd', learn.wd):g}")  # fmt: skip
    return lines


def describe(learn: _Learner) -> str:
    """The Learner's ``repr``: the model, its data, the optimizer, and the last fit."""
    params = list(learn.model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    n_groups = len(learn.param_groups)
    frozen = "all trainable" if trainable == total else f"{trainable:,} trainable"
    lines = [f"Learner: {type(learn.model).__name__}, {total:,} parameters ({frozen}) in "
             f"{n_groups} param group{'s' * (n_groups > 1)}, on {learn.device}"]  # fmt: skip
    n_train = _len(learn.train_data)
    valid = "no validation data" if learn.valid_data is None else (
        f"{_len(learn.valid_data)} validation batches")  # fmt: skip
    metrics = ", ".join(_name(m) for m in learn.metrics) or "none"
    loss = _name(learn.loss_func) if learn.loss_func is not None else "the model's own"
    lines.append(f"  data: {n_train} training batches, {valid}; loss {loss}; metrics {metrics}")
    opt = (type(learn.opt).__name__ if learn.opt is not None
           else f"{_name(learn.opt_func)} (made at the first fit)")  # fmt: skip
    lines.append(f"  optimizer: {opt}, wd {learn.wd:g} (decoupled); callbacks: "
                 + ", ".join(type(c).__name__ for c in learn.cbs))  # fmt: skip
    rows = learn.recorder.rows
    if learn.scheduler is not None and rows:
        last = rows[-1]
        cells = ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                          if k not in ("epoch", "seconds") and isinstance(v, float)
                          and math.isfinite(v))  # fmt: skip
        sched = learn.scheduler
        lines.append(f"  last fit: {len(rows)} epochs, optimizer step {sched.step_count} of "
                     f"{sched.total_steps}; epoch {last['epoch']}: {cells}")  # fmt: skip
    else:
        lines.append("  not trained yet")
    return "\n".join(lines)


def _len(data: Any) -> str:
    try:
        return str(len(data))
    except TypeError:
        return "?"
