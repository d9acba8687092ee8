"""Parameter groups: how the Learner splits a model, freezes it and decays its weights.

The ``Learner`` keeps the groups (``learn.param_groups``, from its ``splitter``) and calls
these functions; they know nothing of the training loop:

- ``split``: the groups a splitter returns, checked (disjoint, non-empty), and the ids of
  normalization parameters (kept trainable when frozen, never decayed by default);
- ``set_trainable``: ``requires_grad`` per group (fastai's ``freeze_to``);
- ``decay_params``: per group, the parameters decoupled weight decay applies to;
- ``spread``: one value per group from a float, a ``slice`` or a sequence
  (discriminative learning rates);
- ``make_optimizer``: the optimizer over the groups (``sgd`` and ``adamw`` are the
  built-in ``opt_func``s);
- ``weight_decay``: one step of decoupled weight decay.

``trainable_params``, ``freeze_to``, ``freeze``, ``unfreeze`` and ``group_values`` are the
same on a Learner, and its methods (``Learner.freeze = params.freeze``).

>>> import torch
>>> nn = torch.nn
>>> model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
>>> groups, norm_ids = split(model, lambda m: [list(m[:2].parameters()), list(m[2].parameters())])
>>> spread(slice(1e-3, 1e-1), len(groups))
[0.001, 0.1]
>>> [len(g) for g in decay_params(groups, norm_ids)]  # weights only: no biases, no norms
[1, 1]
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from onecycle.errors import ConfigError, check_int, check_positive

if TYPE_CHECKING:
    from onecycle.state import TrainState

__all__ = [
    "LR", "LRMax", "adamw", "decay_params", "freeze", "freeze_to", "group_values",
    "make_optimizer", "set_trainable", "sgd", "split", "spread", "trainable_params",
    "unfreeze", "weight_decay",
]  # fmt: skip

log = logging.getLogger("onecycle.learner")  # messages about the Learner's optimizer

LR = float | slice | Sequence[float]
LRMax = LR | Literal["auto"]

NORM_TYPES = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
)  # fmt: skip


def one_group(model: nn.Module) -> list[list[nn.Parameter]]:
    """The default splitter: every parameter in one group."""
    return [list(model.parameters())]


def split(
    model: nn.Module, splitter: Callable[[nn.Module], list[list[nn.Parameter]]]
) -> tuple[list[list[nn.Parameter]], set[int]]:
    """``splitter(model)``'s groups, checked, and the ids of normalization parameters."""
    groups = [list(g) for g in splitter(model)]
    seen: set[int] = set()
    for g in groups:
        for p in g:
            if id(p) in seen:
                raise ConfigError("splitter", "a parameter in two groups", "disjoint groups")
            seen.add(id(p))
    if not groups or not all(groups):
        raise ConfigError("splitter", f"{len(groups)} groups", "non-empty parameter groups")
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES)
            for p in m.parameters(recurse=False)}  # fmt: skip
    return groups, norm


def set_trainable(
    groups: list[list[nn.Parameter]], n: int, norm_ids: set[int], train_bn: bool
) -> None:
    """Freeze the first ``n`` groups (negative counts from the end); normalization
    parameters stay trainable when ``train_bn``."""
    n = check_int("n", n, minimum=-len(groups))
    n = n % len(groups) if n < 0 else min(n, len(groups))
    for i, group in enumerate(groups):
        for p in group:
            p.requires_grad_(i >= n or (train_bn and id(p) in norm_ids))


def decay_params(
    groups: list[list[nn.Parameter]], norm_ids: set[int], wd_bn_bias: bool = False
) -> list[list[nn.Parameter]]:
    """Per group, the trainable parameters that weight decay applies to: not biases and
    normalization parameters (anything 1-d) unless ``wd_bn_bias``."""
    return [
        [p for p in group
         if p.requires_grad and (wd_bn_bias or (p.ndim > 1 and id(p) not in norm_ids))]
        for group in groups
    ]  # fmt: skip


def spread(value: LR, n: int, name: str = "lr") -> list[float]:
    """One value per group (of ``n``): a float for all, ``slice(lo, hi)`` spread
    geometrically from the first to the last group, ``slice(hi)`` as ``hi/10`` for all but
    the last (fastai's meaning), or a sequence with one value per group."""
    if isinstance(value, slice):
        if value.step is not None or value.stop is None:
            raise ConfigError(name, value, "slice(hi) or slice(lo, hi)")
        hi = check_positive(name, value.stop)
        if value.start is None:
            return [hi / 10] * (n - 1) + [hi]
        lo = check_positive(name, value.start)
        if lo > hi:
            raise ConfigError(name, value, "slice(lo, hi) with lo <= hi (body LR to head LR)")
        if n == 1:
            return [hi]
        return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ConfigError(name, value, f"{n} values, one per param group")
        return [check_positive(name, v) for v in value]
    return [check_positive(name, value)] * n


def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9 (the momentum is then cycled by ``fit_one_cycle``).

    Weight decay is left to the Learner (decoupled), so the optimizer's own is 0.
    """
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)


def adamw(params: Any, lr: float) -> torch.optim.Optimizer:
    """AdamW with fastai's defaults (betas 0.9/0.99, eps 1e-5); weight decay by the Learner."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.0)


def make_optimizer(
    opt_func: Callable[[Any, float], torch.optim.Optimizer],
    groups: list[list[nn.Parameter]],
    lrs: list[float],
    wd: float,
) -> torch.optim.Optimizer:
    """``opt_func`` over ``groups`` with one LR each. An optimizer that brings its own
    weight decay (``torch.optim.AdamW`` does, 0.01 by default) while the Learner's
    decoupled ``wd`` is set too is refused: the weights would decay twice."""
    opt = opt_func([{"params": g, "lr": lr} for g, lr in zip(groups, lrs)], lrs[-1])
    own = max((float(g.get("weight_decay", 0) or 0) for g in opt.param_groups), default=0.0)
    if own and wd:
        name = getattr(opt_func, "__name__", type(opt).__name__)
        raise ConfigError(
            "opt_func", f"{name} with weight_decay={own:g}",
            f"an optimizer without its own weight decay while the Learner's wd={wd:g} is set "
            "(both would decay the weights): Learner(..., wd=0) to keep the optimizer's, or "
            f"weight_decay=0 in it (functools.partial({name}, weight_decay=0)) to keep wd",
        )  # fmt: skip
    return opt


@torch.no_grad()
def weight_decay(opt: torch.optim.Optimizer, decay: list[list[nn.Parameter]]) -> None:
    """Decoupled weight decay, one step: ``decay[i]`` (from ``decay_params``) multiplied by
    ``1 - lr * wd`` of the optimizer's group ``i`` (its ``"wd"`` entry, set by the Learner
    and schedulable)."""
    for group, params in zip(opt.param_groups, decay):
        factor = 1.0 - float(group["lr"]) * float(group.get("wd", 0.0))
        if params and factor != 1.0:
            torch._foreach_mul_(params, factor)


# --- the Learner's methods (``Learner.freeze_to = freeze_to``, ...) ----------------------------


def trainable_params(learn: TrainState) -> list[nn.Parameter]:
    """Parameters that currently receive gradients."""
    return [p for g in learn.param_groups for p in g if p.requires_grad]


def freeze_to(learn: TrainState, n: int) -> None:
    """Freeze the first ``n`` param groups (negative counts from the end); normalization
    layers stay trainable when the Learner's ``train_bn``."""
    set_trainable(learn.param_groups, n, learn._norm_ids, learn.train_bn)


def freeze(learn: TrainState) -> None:
    """Train only the last param group (the head), as fastai's ``freeze``."""
    freeze_to(learn, -1)


def unfreeze(learn: TrainState) -> None:
    """Train every param group."""
    freeze_to(learn, 0)


_told_one_group: weakref.WeakSet[Any] = weakref.WeakSet()  # learners warned of a lone group


def group_values(learn: TrainState, value: LR, name: str = "lr") -> list[float]:
    """One value per param group (``spread``): a float for all, ``slice(lo, hi)``
    geometric from first to last group, ``slice(hi)`` as ``hi/10`` for all but the last,
    or a sequence with one value per group.

    With one group, ``slice(lo, hi)`` gives ``hi`` (as fastai): ``lo`` has no group to go
    to, which is warned once per Learner (pass a ``splitter`` for discriminative LRs)."""
    values = spread(value, len(learn.param_groups), name)
    if (isinstance(value, slice) and value.start is not None and len(values) == 1
            and learn not in _told_one_group):  # fmt: skip
        _told_one_group.add(learn)
        log.warning("%s=%r: the model has one param group, so the slice's low end %g has no "
                    "group to go to: it all trains at %g, the high end; give the Learner a "
                    "splitter for discriminative LRs, or pass one number", name, value,
                    value.start, values[0])  # fmt: skip
    return values
