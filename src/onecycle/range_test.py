"""The LR range test (Smith 2017, arXiv:1506.01186, section 3.3; fastai's ``lr_find``).

Train for a short while as the learning rate grows from ``start_lr`` to ``end_lr``
(exponentially by default, linearly as in Smith's paper), record the loss, stop when it
diverges, then put *everything* back: parameters, buffers (batch-norm statistics),
optimizer state and hyper-parameters, gradients, the torch/CUDA/numpy/python random
states and the loader's position. Nothing touches the disk; the snapshot is one copy of
the model and one of the optimizer state. A training run after the test is bit-identical
to the same run without it.

It works on a bare model + optimizer + batches, with or without a ``Learner``. Under
``torch.distributed`` (a DDP-wrapped model, each rank its own batches) every loss is
averaged over the ranks, so every rank stops at the same step and gets the same
suggestions:

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(512, 4, generator=g); y = (x.sum(1) > 0).long()
>>> model = torch.nn.Linear(4, 2)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> before = model.weight.clone()
>>> res = range_test(model, opt, torch.nn.functional.cross_entropy,
...                  [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)], num_it=60)
>>> torch.equal(model.weight, before), opt.param_groups[0]["lr"]
(True, 0.1)
>>> sorted(res.suggestions)
['clr_bounds', 'minimum', 'steep', 'valley']
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from onecycle import batch as B
from onecycle import distributed as D
from onecycle.data.loader import to_device
from onecycle.errors import ConfigError, check_int, check_positive, check_range
from onecycle.scheduler import Scheduler
from onecycle.schedules import Exp, Lin
from onecycle.suggest import Suggestion, suggest

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RangeTestResult", "Snapshot", "Step", "preserve_state", "range_test"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """A custom training step for models whose batches are not ``(x, y)``:
    ``fn(model, batch) -> loss`` (a scalar tensor). Pass it where a loss function goes.

    >>> step = Step(lambda model, batch: model(batch["x"]).pow(2).mean())
    """

    fn: Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class RangeTestResult:
    """What a range test saw, and what it suggests.

    ``lrs[i]`` is the LR of the reference (last) param group at step ``i``; ``losses`` the
    raw training losses (averaged over accumulated micro-batches), ``smoothed`` their
    bias-corrected EMA. ``valid_losses`` / ``valid_metrics`` are filled when validation
    batches were given. ``suggestions`` maps a rule's name to a ``Suggestion`` (its ``lr``
    is None, with the reason, when the curve does not support the rule); ``recommended``
    is the ``lr_max`` for 1cycle and the rule it came from; ``analysis_curve`` is the
    zero-lag smoothed loss the rules read (NaN outside their window).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str
    mode: str
    group_ratios: list[float]
    valid_losses: list[float] = field(default_factory=list)
    valid_metrics: list[float] = field(default_factory=list)
    suggestions: dict[str, Suggestion] = field(default_factory=dict)
    recommended: Suggestion | None = None
    analysis_curve: list[float] = field(default_factory=list)

    @property
    def lr_max(self) -> float | None:
        """The recommended 1cycle ``lr_max``, or None (``reason`` says why)."""
        return self.recommended.lr if self.recommended is not None else None

    @property
    def reason(self) -> str:
        """Why ``recommended`` is what it is: its rule's reason, or why there is none (the
        curve too short, flat or noisy, still falling at the end, ...)."""
        if self.recommended is not None:
            return self.recommended.reason
        bounds = self.suggestions.get("clr_bounds")
        if bounds is not None and bounds.lr is None:
            return bounds.reason  # every "none" of the suggestion rules ends up here
        if not self.suggestions:
            return "not analysed: the result holds no suggestions"
        return "no reliable lr_max on this curve"

    def __repr__(self) -> str:
        lo, hi = (self.lrs[0], self.lrs[-1]) if self.lrs else (math.nan, math.nan)
        pick = f"{self.lr_max:.3g}" if self.lr_max is not None else "none"
        lines = [f"RangeTestResult: {len(self.lrs)} steps, lr {lo:.3g} to {hi:.3g} "
                 f"({self.mode}); {self.stop_reason}",
                 f"  lr_max      {pick:>9}  {self.reason}"]  # fmt: skip
        for name, sug in self.suggestions.items():
            if sug.bounds:
                value = f"{sug.bounds[0]:.3g} .. {sug.bounds[1]:.3g}"
            else:
                value = f"{sug.lr:>9.3g}" if sug.lr is not None else f"{'-':>9}"
            why = "" if sug.lr is None and sug.reason == self.reason else f"  {sug.reason}"
            lines.append(f"  {name:<11} {value}{why}")
        if self.valid_losses:
            lines.append(f"  validation after each step: {len(self.valid_losses)} points")
        return "\n".join(lines)

    def _repr_html_(self) -> str | None:
        """In a notebook: the curve with its suggestions marked, above the text summary
        (the text alone without matplotlib)."""
        import html

        text = f"<pre>{html.escape(repr(self))}</pre>"
        try:
            png = self.plot()._repr_png_()
        except ImportError:
            return None
        import base64

        img = base64.b64encode(png).decode("ascii")
        return f'<img src="data:image/png;base64,{img}" alt="range test"/>{text}'

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready content: the curve, the suggestions, the recommendation."""
        return {
            "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed,
            "valid_losses": self.valid_losses, "valid_metrics": self.valid_metrics,
            "stop_reason": self.stop_reason, "mode": self.mode,
            "group_ratios": self.group_ratios,
            "suggestions": {k: v.to_dict() for k, v in self.suggestions.items()},
            "recommended": self.recommended.to_dict() if self.recommended else None,
            "analysis_curve": [None if v != v else v for v in self.analysis_curve],
        }  # fmt: skip

    def plot(
        self,
        path: str | Path | None = None,
        *,
        marks: dict[str, float] | None = None,
        ax: Any = None,
    ) -> Figure:
        """Loss against LR (log scale for an exponential sweep), suggestions marked, plus
        labelled vertical lines at ``marks`` (name -> lr): the matplotlib ``Figure``, drawn
        into ``ax`` if given, written to ``path`` if given (``onecycle.plots``). In a
        notebook it shows inline as a cell's value."""
        from onecycle.plots import plot_range_test

        return plot_range_test(self, path, marks=marks, ax=ax)


class Snapshot:
    """Everything training touches, copied now; ``restore()`` puts it back bit-exactly
    (as often as needed).

    Covers the model's parameters and buffers, its train/eval mode, the gradients, the
    optimizer's state and param-group hyper-parameters, the torch (CPU and CUDA), numpy
    and python random states, and the ``state_dict()`` of each object in ``extra`` that
    has one (e.g. a ``Loader``'s position). In memory: one copy of the model and one of
    the optimizer state.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *extra: Any) -> None:
        self.model, self.optimizer = model, optimizer
        self.model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.training = {m: m.training for m in model.modules()}
        self.grads = {p: (None if p.grad is None else p.grad.detach().clone())
                      for p in model.parameters()}  # fmt: skip
        self.opt_state = copy.deepcopy(optimizer.state_dict())
        self.rng = (
            torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            np.random.get_state(),
            random.getstate(),
        )
        self.extra = [(obj, st) for obj in extra if (st := _loader_state(obj)) is not None]

    def restore(self) -> None:
        with torch.no_grad():
            self.model.load_state_dict(self.model_state)
        for m, was_training in self.training.items():
            m.training = was_training
        for p, g in self.grads.items():
            p.grad = None if g is None else g.clone()
        self.optimizer.load_state_dict(copy.deepcopy(self.opt_state))
        torch.set_rng_state(self.rng[0])
        if self.rng[1] is not None:
            torch.cuda.set_rng_state_all(self.rng[1])
        np.random.set_state(self.rng[2])
        random.setstate(self.rng[3])
        for obj, state in self.extra:
            obj.load_state_dict(copy.deepcopy(state))


@contextmanager
def preserve_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, *extra: Any
) -> Iterator[None]:
    """Snapshot everything training touches (``Snapshot``); restore it bit-exactly on
    exit, error or not."""
    snap = Snapshot(model, optimizer, *extra)
    try:
        yield
    finally:
        snap.restore()


def _loader_state(obj: Any) -> Any:
    """A copy of ``obj.state_dict()`` for a loader that has one and can give it now; None
    otherwise (accelerate's ``DataLoaderShard`` raises before its first iteration: it has
    no position to restore yet, and its shuffling draws on the torch RNG restored here)."""
    if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
        return None
    try:
        return copy.deepcopy(obj.state_dict())
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return None


def check_sweep(
    start_lr: float, end_lr: float, num_it: int, mode: str, smooth: float, div_factor: float
) -> tuple[float, float, int, float, float]:
    """The sweep's options, validated (shared with ``onecycle.auto.lr_sweep``)."""
    start_lr = check_positive("start_lr", start_lr)
    end_lr = check_positive("end_lr", end_lr)
    if end_lr <= start_lr:
        raise ConfigError("end_lr", end_lr, f"a number > start_lr={start_lr!r}")
    num_it = check_int("num_it", num_it, minimum=5)
    if mode not in ("exp", "linear"):
        raise ConfigError("mode", mode, "'exp' or 'linear'")
    smooth = check_range("smooth", smooth, 0.0, 1.0, hi_open=True)
    div_factor = check_range("div_factor", div_factor, 1.0, math.inf, lo_open=True, hi_open=True)
    return start_lr, end_lr, num_it, smooth, div_factor


def check_metric(metric: Any, valid_batches: Any, loss_func_or_step: Any) -> None:
    """A range-test ``metric`` needs validation batches, and ``(x, y)`` batches: with a
    ``Step`` the batch format is the user's, so a metric ``(pred, target)`` cannot be fed."""
    if metric is None:
        return
    if not callable(metric):
        raise ConfigError("metric", metric, "a callable (pred, target) -> value, or None")
    name = getattr(metric, "__name__", metric)
    if valid_batches is None:
        raise ConfigError("metric", name, "None unless valid_batches are given (computed on them)")
    if isinstance(loss_func_or_step, Step):
        raise ConfigError("metric", name,
                          "None with Step(fn): a metric reads (x, y) batches; compute it "
                          "in your own evaluation, or pass (x, y) batches and a loss "
                          "function")  # fmt: skip


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """Batches forever: restart the iterable when it runs out (an epoch shorter than
    ``num_it`` is fine). An empty iterable is an error, not an endless loop."""
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ConfigError("batches", "an empty iterable", "at least one batch")


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_func_or_step: Callable[[Any, Any], torch.Tensor] | Step | None,
    batches: Iterable[Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    mode: Literal["exp", "linear"] = "exp",
    smooth: float = 0.98,
    stop_div: bool = True,
    div_factor: float = 4.0,
    valid_batches: Iterable[Any] | None = None,
    metric: Callable[[Any, Any], torch.Tensor] | None = None,
    accumulate: int = 1,
    autocast: Callable[[], Any] | None = None,
) -> RangeTestResult:
    """Run the LR range test and restore everything afterwards.

    Args:
        model, optimizer: what to probe; any ``torch.optim`` optimizer.
        loss_func_or_step: ``loss_func(pred, target)``, the batch read as
            ``onecycle.batch`` reads it (``(x, y)`` pairs, or dicts whose ``"labels"`` are
            the target, the model called with the dict's keys); None: the model's own loss
            (a Hugging Face model given labels); or a ``Step(fn)`` with
            ``fn(model, batch) -> loss`` for any other batch format (a 3-tuple is refused,
            never read as its first two elements).
        batches: iterable of batches, restarted if shorter than ``num_it`` steps.
        start_lr, end_lr: the sweep's range for the *last* param group; the other groups
            keep their current LR ratio to it (discriminative LRs survive the test).
        num_it: optimizer steps (LR values) in the sweep, >= 5.
        mode: ``"exp"`` (geometric, fastai) or ``"linear"`` (Smith's paper).
        smooth: EMA factor for the smoothed loss (bias-corrected), in [0, 1).
        stop_div: stop when the smoothed loss exceeds ``div_factor`` times its best (for
            negative losses: rises by ``(div_factor - 1) * |best|``), or any loss is
            NaN/inf.
        valid_batches: if given, the mean validation loss (and ``metric``, e.g. accuracy)
            after every step: Smith's accuracy-vs-LR curve. Costs a pass per step.
        accumulate: micro-batches per optimizer step (one LR value).
        autocast: a context-manager factory for mixed precision (as ``Learner.autocast``).

    Returns:
        ``RangeTestResult``; the suggestion rules are documented in ``onecycle.suggest``.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", type(model).__name__, "a torch.nn.Module")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError("optimizer", type(optimizer).__name__, "a torch.optim.Optimizer")
    if loss_func_or_step is not None and not callable(loss_func_or_step) and not isinstance(
        loss_func_or_step, Step
    ):  # fmt: skip
        raise ConfigError("loss_func_or_step", loss_func_or_step,
                          "a loss function, None (the model's own loss), or Step(fn)")  # fmt: skip
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if not any(id(p) in owned for p in model.parameters() if p.requires_grad):
        raise ConfigError("optimizer", type(optimizer).__name__,
                          "an optimizer over this model's trainable parameters (it holds "
                          "none of them: the sweep would train nothing)")  # fmt: skip
    start_lr, end_lr, num_it, smooth, div_factor = check_sweep(
        start_lr, end_lr, num_it, mode, smooth, div_factor
    )
    check_metric(metric, valid_batches, loss_func_or_step)
    accumulate = check_int("accumulate", accumulate)
    step_fn = _make_step(loss_func_or_step)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ctx = autocast or _null
    ref = float(optimizer.param_groups[-1]["lr"]) or 1.0
    ratios = [float(g["lr"]) / ref if ref else 1.0 for g in optimizer.param_groups]
    sweep = Exp if mode == "exp" else Lin
    lrs, losses, smoothed, v_losses, v_metrics = [], [], [], [], []
    stop_reason = f"completed {num_it} steps"
    with preserve_state(model, optimizer, batches):
        sched = Scheduler(
            optimizer, {"lr": [sweep(start_lr * r, end_lr * r) for r in ratios]}, num_it
        )
        data = _cycle(batches)
        avg, best = 0.0, math.inf
        model.train()
        optimizer.zero_grad(set_to_none=True)
        for i in range(num_it):
            lr = float(optimizer.param_groups[-1]["lr"])
            total = 0.0
            finite = True
            for _ in range(accumulate):
                with ctx():
                    loss = step_fn(model, to_device(next(data), device))
                value = _rank_mean(float(loss.detach()), device)  # the same decisions on every rank
                total += value / accumulate
                if not math.isfinite(value):
                    finite = False
                    break
                (loss / accumulate).backward()
            lrs.append(lr)
            losses.append(total)
            if not finite:
                smoothed.append(math.nan)
                stop_reason = f"non-finite loss ({total}) at lr={lr:.3g}"
                break
            avg = smooth * avg + (1 - smooth) * total
            s = avg / (1 - smooth ** (i + 1))
            smoothed.append(s)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if valid_batches is not None:
                vl, vm = _validate(model, step_fn, valid_batches, metric, device, ctx)
                v_losses.append(_rank_mean(vl, device))
                if vm is not None:
                    v_metrics.append(_rank_mean(vm, device))
                model.train()
            best = min(best, s)
            if stop_div and i > 0 and s > best + (div_factor - 1) * max(abs(best), 1e-12):
                stop_reason = f"diverged at lr={lr:.3g} (smoothed loss > {div_factor:g}x best)"
                break
            sched.step()
    result = RangeTestResult(lrs, losses, smoothed, stop_reason, mode, ratios, v_losses, v_metrics)
    analysis = suggest(lrs, losses, stop_reason, adaptive=_adaptive(optimizer))
    result.suggestions, result.recommended = analysis.suggestions, analysis.recommended
    result.analysis_curve = analysis.curve
    return result


def _rank_mean(value: float, device: torch.device) -> float:
    """``value`` averaged over the ranks of a process group (itself without one)."""
    if not D.is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)  # NCCL: a CUDA tensor
    D.all_reduce_sum(t)
    return float(t[0]) / D.world_size()


def _adaptive(optimizer: torch.optim.Optimizer) -> bool:
    """Does the optimizer normalise its steps per parameter (Adam family, RMSprop, ...)?"""
    adaptive = (torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta)
    return "betas" in optimizer.param_groups[0] or isinstance(optimizer, adaptive)


def _null() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def _make_step(obj: Any) -> Callable[[nn.Module, Any], torch.Tensor]:
    if isinstance(obj, Step):
        return obj.fn

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        # (x, y) or a dict with labels, read as the Learner reads them; a 3-tuple is refused
        return B.forward(model, batch, B.split_batch, obj)[3]

    return step


@torch.no_grad()
def _validate(
    model: nn.Module,
    step_fn: Callable[[nn.Module, Any], torch.Tensor],
    batches: Iterable[Any],
    metric: Callable[[Any, Any], torch.Tensor] | None,
    device: torch.device,
    ctx: Callable[[], Any],
) -> tuple[float, float | None]:
    model.eval()
    loss_sum, metric_sum, n = 0.0, 0.0, 0
    for batch in batches:
        batch = to_device(batch, device)
        with ctx():
            loss_sum += float(step_fn(model, batch))
            if metric is not None:
                inputs, target = B.split_batch(batch)
                metric_sum += float(metric(B.prediction(B.call_model(model, inputs)), target))
        n += 1
    if n == 0:
        raise ConfigError("valid_batches", "an empty iterable", "at least one batch")
    return loss_sum / n, (metric_sum / n if metric is not None else None)
