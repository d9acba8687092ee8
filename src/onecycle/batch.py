"""Batches of any shape: how the Learner and the range test read them.

Three small steps, the same in training, validation, ``get_preds`` and the range test:

1. ``split_batch(batch) -> (inputs, target)``. The default reads ``(x, y)`` pairs and
   mappings (Hugging Face style: the whole mapping is the inputs, ``batch["labels"]`` the
   target, or None without one). Any other batch (a 3-tuple, an object) is refused with
   a ``ConfigError`` naming the hook: pass your own ``split_batch`` to the ``Learner``
   (e.g. ``lambda b: ((b[0], b[1]), b[2])`` for two inputs and a target).
2. ``call_model(model, inputs)``: a tensor as ``model(x)``, a tuple or list as
   ``model(*xs)``, a mapping as ``model(**kw)``.
3. ``prediction(output)``: what the loss and metrics see: a tensor itself, a tuple's first
   element, a mapping's (or ``ModelOutput``'s) ``"logits"``. With ``loss_func=None`` the
   loss is the model's own (``output["loss"]`` or ``output.loss``: HF models given labels).

>>> import torch
>>> split_batch((torch.zeros(2, 3), torch.ones(2)))[1]
tensor([1., 1.])
>>> inputs, target = split_batch({"input_ids": torch.zeros(2, 4), "labels": torch.ones(2)})
>>> sorted(inputs), target
(['input_ids', 'labels'], tensor([1., 1.]))
>>> prediction((torch.ones(1), "aux"))
tensor([1.])

Class labels are checked against the model's outputs (``check_labels``) before the loss
sees them: torch's own ``IndexError: Target 5 is out of bounds`` (or, on CUDA, a
device-side assert) names neither the batch nor the two numbers that disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onecycle.errors import ConfigError

__all__ = [
    "batch_size", "call_model", "check_labels", "check_target", "compute_loss", "forward",
    "prediction", "split_batch",
]  # fmt: skip

SplitBatch = Callable[[Any], tuple[Any, Any]]


def _describe(batch: Any) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} elements"
    return f"a {type(batch).__name__}"


def split_batch(batch: Any) -> tuple[Any, Any]:
    """The default: ``(x, y)`` pairs, or a mapping (inputs) with its ``"labels"`` (target)."""
    if type(batch) in (tuple, list) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        return batch, batch.get("labels")
    raise ConfigError(
        "split_batch", _describe(batch),
        "(x, y) pairs or mappings with 'labels' for the default; for any other batch "
        "pass split_batch=lambda batch: (inputs, target) to the Learner (inputs: a tensor, "
        "a tuple of positional inputs or a dict of keyword inputs), or a Step(fn) to "
        "range_test",
    )  # fmt: skip


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(x)``, ``model(*xs)`` for a tuple or list, ``model(**kw)`` for a mapping."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def prediction(output: Any) -> Any:
    """The model's output as the loss and metrics see it: a tensor as it is, a tuple's or
    list's first element, a mapping's (``ModelOutput``'s) ``"logits"``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output:
            return output["logits"]
        return next(iter(output.values()), None)
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


def compute_loss(
    loss_func: Callable[[Any, Any], torch.Tensor] | None, output: Any, pred: Any, target: Any
) -> torch.Tensor:
    """``loss_func(pred, target)``, or with ``loss_func=None`` the model's own loss."""
    if loss_func is not None:
        if target is None:
            raise ConfigError("split_batch", "a batch without a target",
                              "a target for loss_func (or loss_func=None to use the model's "
                              "own loss, e.g. a Hugging Face model given labels)")  # fmt: skip
        return loss_func(pred, target)
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if not isinstance(loss, torch.Tensor):
        raise ConfigError("loss_func", None, "a loss function (pred, target) -> loss: this "
                          "model's output has no 'loss' (a Hugging Face model computes one "
                          "when the batch holds 'labels')")  # fmt: skip
    return loss


def forward(
    model: nn.Module, batch: Any, split: Callable[[Any], tuple[Any, Any]],
    loss_func: Callable[[Any, Any], torch.Tensor] | None,
    where: tuple[str, str] | None = None,
) -> tuple[Any, Any, Any, torch.Tensor]:  # fmt: skip
    """``(inputs, target, pred, loss)`` of one batch: the three steps above, then the loss.

    ``where``: ``(data name, position)``, e.g. ``("train_data", "epoch 0, batch 3")``:
    class labels out of the model's range are then refused naming it (``check_labels``):
    before the loss for PyTorch's class-index losses, and for any other loss when it fails.
    """
    inputs, target = split(batch)
    out = call_model(model, inputs)
    pred = prediction(out)
    if where is None:
        return inputs, target, pred, compute_loss(loss_func, out, pred, target)
    ignore = _class_index_loss(loss_func)
    if ignore is not None:
        check_labels(pred, target, where, ignore)
    try:
        loss = compute_loss(loss_func, out, pred, target)
    except (IndexError, RuntimeError):
        if isinstance(pred, torch.Tensor) and pred.ndim == 2:  # classes on dim 1, surely
            check_labels(pred, target, where, -100)
        raise
    return inputs, target, pred, loss


def _class_index_loss(loss_func: Any) -> int | None:
    """The ``ignore_index`` of PyTorch's class-index losses (cross-entropy, NLL: the class
    is dim 1 of the prediction), None for any other loss."""
    fn, kw = loss_func, {}
    while isinstance(fn, functools.partial):
        kw = {**fn.keywords, **kw}
        fn = fn.func
    if fn is F.cross_entropy or fn is F.nll_loss:
        return int(kw.get("ignore_index", -100))
    if isinstance(fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return int(fn.ignore_index)
    return None


def check_labels(pred: Any, target: Any, where: tuple[str, str], ignore_index: int = -100) -> None:
    """Class-index targets (an integer tensor, one dimension less than ``pred``) must lie
    in ``[0, C)``, ``C = pred.shape[1]`` the classes the model outputs: refuse the batch
    at ``where`` naming the largest label and ``C``.

    >>> check_labels(torch.zeros(4, 5), torch.tensor([0, 2, 9, 1]), ("train_data", "batch 0"))
    Traceback (most recent call last):
    ...
    onecycle.errors.ConfigError: train_data='batch 0: labels up to 9' is invalid: expected class \
labels in [0, 5): the model outputs 5 classes (pred of shape (4, 5)); give it 10 outputs, or \
map the labels to 0..4
    """
    if not (isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor)):
        return
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        return
    if pred.ndim < 2 or target.ndim != pred.ndim - 1 or target.numel() == 0:
        return
    labels = target[target != ignore_index]
    if labels.numel() == 0:
        return
    lo, hi, n = int(labels.min()), int(labels.max()), pred.shape[1]
    if 0 <= lo and hi < n:
        return
    bad = f"labels up to {hi}" if hi >= n else f"labels down to {lo}"
    fix = f"give it {hi + 1} outputs, or map" if hi >= n else "map"
    raise ConfigError(
        where[0], f"{where[1]}: {bad}",
        f"class labels in [0, {n}): the model outputs {n} classes (pred of shape "
        f"{tuple(pred.shape)}); {fix} the labels to 0..{n - 1}",
    )  # fmt: skip


def check_target(target: Any, metrics: list[Any]) -> None:
    """Metrics compare predictions with a target: refuse batches without one."""
    if target is None and metrics:
        raise ConfigError("metrics", [getattr(m, "__name__", m) for m in metrics],
                          "none for batches without a target (split_batch gave None)")  # fmt: skip


def batch_size(inputs: Any, target: Any) -> int:
    """Samples in a batch: the target's length, else the first tensor's in the inputs."""
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        return len(target)
    values = inputs.values() if isinstance(inputs, Mapping) else (
        inputs if isinstance(inputs, (tuple, list)) else [inputs]
    )  # fmt: skip
    for v in values:
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return len(v)
    return 1
