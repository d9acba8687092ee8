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

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from onecycle import batch as B
from onecycle.errors import ConfigError

__all__ = ["TTA", "hflip", "identity", "outputs", "shift", "views"]

View = Callable[[torch.Tensor], torch.Tensor]
TTA = str | Sequence[View] | None


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
