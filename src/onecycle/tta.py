"""Test-time augmentation: each input seen in a few views, the model's outputs averaged.

A view is a function ``inputs -> inputs`` on a batch tensor. ``tta="flip"`` is the input
as it is and mirrored left to right (``hflip``: the last dimension, the width of an
``(N, C, H, W)`` image batch), what a model trained with ``Loader(hflip=True)`` has seen;
``tta="flip+shift"`` adds the input moved by one pixel each way (``shift``), for models
trained with ``crop_pad``; or give your own views. The model's raw outputs (logits) are
averaged over the views, and the loss, metrics, activation and decoded classes read the
average: ``learn.validate(tta="flip")``, ``learn.get_preds(tta="flip")``.

Views must keep what the label means: a mirrored shirt is a shirt, a mirrored digit is
not always the same digit, and a reversed 1-D signal is usually another signal.

>>> x = torch.arange(6.0).view(1, 1, 2, 3)
>>> hflip(x)[0, 0].tolist()
[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]
>>> shift(1)(x)[0, 0].tolist()  # one pixel right, zeros coming in
[[0.0, 0.0, 1.0], [0.0, 3.0, 4.0]]
>>> len(views("flip")), len(views("flip+shift"))
(2, 6)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch import nn

from onecycle import batch as B
from onecycle.data.loader import to_device
from onecycle.errors import ConfigError

__all__ = ["TTA", "evaluate", "hflip", "identity", "outputs", "shift", "views"]

View = Callable[[torch.Tensor], torch.Tensor]
TTA = str | Sequence[View] | None


class _Learner(Protocol):
    """What test-time augmentation reads from a Learner."""

    model: nn.Module
    device: torch.device
    loss_func: Callable[[Any, Any], torch.Tensor] | None
    metrics: list[Callable[[Any, Any], torch.Tensor]]
    split_batch: Callable[[Any], tuple[Any, Any]]
    autocast: Callable[[], AbstractContextManager[Any]]
    replicas: Any


def identity(x: torch.Tensor) -> torch.Tensor:
    """The input as it is."""
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirrored left to right: the last dimension reversed (as ``Loader(hflip=True)``)."""
    return x.flip(-1)


def shift(dx: int, dy: int = 0) -> View:
    """A view that moves an image batch ``(N, C, H, W)`` by ``dx`` pixels right and ``dy``
    down (negative: left, up), zeros coming in: one of the crops ``Loader(crop_pad=...)``
    trains on."""

    def view(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ConfigError("tta", "shift on a tensor of shape " + str(tuple(x.shape)),
                              "image batches (N, C, H, W)")  # fmt: skip
        out = torch.zeros_like(x)
        h, w = x.shape[-2], x.shape[-1]
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[..., yd, xd] = x[..., ys, xs]
        return out

    view.__name__ = f"shift({dx}, {dy})"
    return view


PRESETS: dict[str, tuple[View, ...]] = {
    "flip": (identity, hflip),
    "flip+shift": (identity, hflip, shift(1), shift(-1), shift(0, 1), shift(0, -1)),
}


def views(tta: TTA) -> tuple[View, ...]:
    """The views ``tta`` names: a preset (``"flip"``, ``"flip+shift"``) or a sequence of
    callables ``inputs -> inputs`` (include ``identity`` to keep the plain input)."""
    if isinstance(tta, str):
        if tta not in PRESETS:
            raise ConfigError("tta", tta, f"one of {sorted(PRESETS)}, a list of callables or None")
        return PRESETS[tta]
    if isinstance(tta, Sequence) and tta and all(callable(v) for v in tta):
        return tuple(tta)
    raise ConfigError("tta", tta, f"one of {sorted(PRESETS)}, a list of callables or None")


def outputs(model: nn.Module, inputs: Any, tta: Sequence[View]) -> torch.Tensor:
    """The model's raw outputs on ``inputs`` (a tensor), averaged over the views ``tta``."""
    if not isinstance(inputs, torch.Tensor):
        raise ConfigError("tta", f"inputs of type {type(inputs).__name__}",
                          "a batch tensor (views transform tensors)")  # fmt: skip
    total = None
    for view in tta:
        out = B.prediction(B.call_model(model, view(inputs))).float()
        total = out if total is None else total + out
    assert total is not None
    return total / len(tta)


@torch.no_grad()
def evaluate(learn: _Learner, data: Iterable[Any], tta: TTA) -> dict[str, float]:
    """Loss and metrics on ``data`` from the outputs averaged over the views, per sample
    (summed over the process group's ranks, as ``validate``); the model in evaluation mode,
    its mode put back afterwards."""
    tta_views = views(tta)
    if learn.loss_func is None:
        raise ConfigError("tta", tta, "None for a model that computes its own loss "
                          "(loss_func=None): the loss needs the averaged outputs")  # fmt: skip
    was_training = learn.model.training
    learn.model.eval()
    total = torch.zeros((), dtype=torch.float64, device=learn.device)
    sums = [torch.zeros((), dtype=torch.float64, device=learn.device) for _ in learn.metrics]
    n = 0
    try:
        for batch in data:
            inputs, yb = learn.split_batch(to_device(batch, learn.device))
            B.check_target(yb, learn.metrics)
            with learn.autocast():
                pred = outputs(learn.model, inputs, tta_views)
                loss = learn.loss_func(pred, yb)
            bs = B.batch_size(inputs, yb)
            total += loss.detach().double() * bs
            for i, m in enumerate(learn.metrics):
                sums[i] += m(pred, yb).detach().double() * bs
            n += bs
    finally:
        learn.model.train(was_training)
    count = torch.tensor(float(n), dtype=torch.float64, device=learn.device)
    total, *sums, count = learn.replicas.reduce_sums([total, *sums, count])
    n = int(count.item())
    if n == 0:
        raise ConfigError("data", "an empty iterable", "at least one batch")
    results = {"valid_loss": float(total) / n}
    for m, s in zip(learn.metrics, sums):
        results[getattr(m, "__name__", type(m).__name__)] = float(s) / n
    return results
