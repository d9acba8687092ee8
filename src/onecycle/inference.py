"""Predictions from a trained model: ``get_preds`` over batches, ``predict`` on one input.

Both are functions of the Learner and also its methods (``Learner.predict = predict``).
Outputs come raw or through an ``activation``: ``"softmax"``, ``"sigmoid"``, a callable,
or ``"auto"``, the one that matches the loss (softmax for cross-entropy, sigmoid for
binary cross-entropy on logits, none otherwise). *Decoded* outputs are classes: the
arg-max of several outputs per sample, or output > 0 (probability > 0.5) under a sigmoid
loss; a single output per sample (regression) decodes to itself.

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(256, 2); y = (x[:, 0] > 0).long()
>>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 32), Loader(x, y, 128),
...                 loss_func=torch.nn.functional.cross_entropy)
>>> learn.fit_one_cycle(2, 0.5)
>>> probs, targets, classes = learn.get_preds(activation="softmax", with_decoded=True)
>>> probs.shape, bool(torch.allclose(probs.sum(1), torch.ones(256)))
(torch.Size([256, 2]), True)
>>> (classes == targets).float().mean().item() > 0.9
True
>>> learn.predict(torch.tensor([3.0, 0.0])).decoded.item()  # one input, no batch dimension
1
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from onecycle import batch as B
from onecycle import tta as T
from onecycle.data.loader import to_device
from onecycle.errors import ConfigError

__all__ = ["Activation", "Prediction", "activation_for", "get_preds", "predict"]

Activation = Literal["auto", "softmax", "sigmoid"] | Callable[[torch.Tensor], torch.Tensor] | None


class _Learner(Protocol):
    """What predictions read from a Learner."""

    model: nn.Module
    device: torch.device
    valid_data: Iterable[Any] | None
    loss_func: Callable[[Any, Any], torch.Tensor] | None
    split_batch: Callable[[Any], tuple[Any, Any]]
    autocast: Callable[[], AbstractContextManager[Any]]


class Prediction(NamedTuple):
    """``predict``'s answer for one input: the decoded output (a class index for a
    classifier) and the output through the activation (probabilities)."""

    decoded: torch.Tensor
    preds: torch.Tensor


def _base(loss_func: Any) -> Any:
    while isinstance(loss_func, functools.partial):
        loss_func = loss_func.func
    return loss_func


def _is_sigmoid_loss(loss_func: Any) -> bool:
    f = _base(loss_func)
    return f is F.binary_cross_entropy_with_logits or isinstance(f, nn.BCEWithLogitsLoss)


def activation_for(loss_func: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The activation that turns a model's outputs into what ``loss_func`` reads them as:
    softmax over the last dimension for cross-entropy (``F.cross_entropy``,
    ``nn.CrossEntropyLoss``, a ``functools.partial`` of them), sigmoid for
    ``binary_cross_entropy_with_logits``, None (the outputs as they are) otherwise.

    >>> activation_for(torch.nn.functional.cross_entropy)(torch.zeros(1, 4)).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    >>> activation_for(torch.nn.functional.mse_loss) is None
    True
    """
    f = _base(loss_func)
    if f is F.cross_entropy or isinstance(f, nn.CrossEntropyLoss):
        return functools.partial(torch.softmax, dim=-1)
    if _is_sigmoid_loss(f):
        return torch.sigmoid
    return None


def _activation(learn: _Learner, activation: Activation) -> Callable[..., torch.Tensor] | None:
    if activation is None:
        return None
    if activation == "auto":
        return activation_for(learn.loss_func)
    if activation == "softmax":
        return functools.partial(torch.softmax, dim=-1)
    if activation == "sigmoid":
        return torch.sigmoid
    if callable(activation) and not isinstance(activation, str):
        return activation
    allowed = "None, 'auto', 'softmax', 'sigmoid' or a callable tensor -> tensor"
    raise ConfigError("activation", activation, allowed)


def _decode(learn: _Learner, raw: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Classes from raw outputs: > 0 under a sigmoid, the arg-max of several outputs."""
    if activation == "sigmoid" or (activation in (None, "auto") and
                                   _is_sigmoid_loss(learn.loss_func)):  # fmt: skip
        return (raw > 0).long()
    if raw.dim() >= 2 and raw.shape[-1] > 1:
        return raw.argmax(dim=-1)
    act = _activation(learn, activation)
    return act(raw) if act is not None else raw


@torch.no_grad()
def get_preds(
    learn: _Learner,
    data: Iterable[Any] | None = None,
    *,
    activation: Activation = None,
    with_decoded: bool = False,
    tta: T.TTA = None,
) -> tuple[torch.Tensor, ...]:
    """Model outputs and targets over ``data`` (default: ``valid_data``), on the CPU, in
    evaluation mode (the model's mode is put back afterwards).

    ``activation``: None (raw outputs, the default), ``"auto"`` (from the loss: softmax
    for cross-entropy, sigmoid for BCE on logits), ``"softmax"``, ``"sigmoid"``, or a
    callable. ``with_decoded=True`` adds a third tensor, the decoded classes (see the
    module's docstring). Returns ``(preds, targets)`` or ``(preds, targets, decoded)``.
    ``tta``: test-time augmentation, the raw outputs averaged over views of each input
    (``"flip"``, ``"flip+shift"`` or a list of callables: ``onecycle.tta``) before the
    activation and decoding.
    """
    data = data if data is not None else learn.valid_data
    if data is None:
        raise ConfigError("data", None, "batches to predict on (no valid_data given)")
    act = _activation(learn, activation)
    views = T.views(tta) if tta is not None else None
    was_training = learn.model.training
    learn.model.eval()
    preds, targets = [], []
    try:
        for batch in data:
            inputs, yb = learn.split_batch(to_device(batch, learn.device))
            with learn.autocast():
                if views is not None:
                    preds.append(T.outputs(learn.model, inputs, views).cpu())
                else:
                    preds.append(B.prediction(B.call_model(learn.model, inputs)).float().cpu())
            if yb is None:
                raise ConfigError("data", "batches without a target", "batches with targets")
            targets.append(yb.cpu())
    finally:
        learn.model.train(was_training)
    if not preds:  # e.g. a Loader left part-way by next(iter(loader)) resumes at its end
        raise ConfigError("data", "an iterable that gave no batches", "at least one batch (a "
                          "Loader iterated part-way goes on from there: set_epoch(0) restarts "
                          "it)")  # fmt: skip
    raw = torch.cat(preds)
    out = act(raw) if act is not None else raw
    if with_decoded:
        return out, torch.cat(targets), _decode(learn, raw, activation)
    return out, torch.cat(targets)


def _batch_of_one(x: Any) -> Any:
    """``x`` with a batch dimension of 1 on every tensor (a tensor, tuple, list or dict)."""
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    if isinstance(x, (tuple, list)):
        return type(x)(_batch_of_one(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _batch_of_one(v) for k, v in x.items()}
    raise ConfigError("x", type(x).__name__, "a tensor (one sample, no batch dimension), or a "
                      "tuple or dict of them")  # fmt: skip


@torch.no_grad()
def predict(learn: _Learner, x: Any, *, activation: Activation = "auto") -> Prediction:
    """The model's answer for one input ``x`` (no batch dimension; a tuple or dict of
    tensors for a model of several inputs): ``Prediction(decoded, preds)``, ``preds``
    through ``activation`` (default ``"auto"``: probabilities for a classifier trained with
    cross-entropy) and ``decoded`` the class (see the module's docstring). In evaluation
    mode; the model's mode is put back afterwards."""
    act = _activation(learn, activation)
    inputs = to_device(_batch_of_one(x), learn.device)
    was_training = learn.model.training
    learn.model.eval()
    try:
        with learn.autocast():
            raw = B.prediction(B.call_model(learn.model, inputs)).float().cpu()
    finally:
        learn.model.train(was_training)
    out = act(raw) if act is not None else raw
    return Prediction(_decode(learn, raw, activation)[0], out[0])
