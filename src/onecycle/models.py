"""A small model zoo for the built-in data sets, chosen to train well on a CPU.

- ``cnn``: ``[conv3x3 (no bias) - BN - ReLU - maxpool2] x 3`` with 32-64-128 channels and a
  linear head: 104,426 parameters for 28x28 images (the yardstick in docs/benchmarks.md).
- ``resnet``: a ResNet-style net for 28x28 images (Myrtle's ResNet-9 shape, narrowed):
  prep conv, two stages of conv-pool plus a residual block, global pooling; 154 k params.
- ``airnet``: the fast Fashion-MNIST default, shaped like airbench's CIFAR-10 net (Keller
  Jordan): three blocks of ``conv3x3 - maxpool2 - BN - ReLU`` (pooling before batch norm:
  BN and ReLU see a quarter of the pixels), the last two followed by one more
  ``conv3x3 - BN - ReLU``; 32-64-128 channels, 289,130 params. Trained in channels_last and
  bf16 it does more per second than the yardstick (docs/benchmarks.md, "A fast recipe").
- ``cnn1d``: a 1-D CNN for MNIST-1D sequences of length 40 (4,858 parameters).
- ``cnn1d-bn``: the MNIST-1D default: four ``conv - BN - ReLU`` layers of 64 channels
  (kernel 5 then 3, stride 2 in the second and fourth), a linear head; 44,106 params.
- ``mlp``: flatten, two hidden layers with ReLU.

Convolutions followed by batch norm have no bias (the norm's shift replaces it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from onecycle.errors import ConfigError

__all__ = [
    "MODELS", "airnet", "airnet_wide", "cnn", "cnn1d", "cnn1d_bn", "count_params", "get_model",
    "mlp", "resnet",
]  # fmt: skip


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def cnn(in_channels: int = 1, n_classes: int = 10, size: int = 28) -> nn.Sequential:
    """Three conv-BN-ReLU-maxpool blocks (32, 64, 128 channels) and a linear head.

    >>> count_params(cnn())
    104426
    """
    side = size // 8
    return nn.Sequential(
        *_conv_bn(in_channels, 32), nn.MaxPool2d(2),
        *_conv_bn(32, 64), nn.MaxPool2d(2),
        *_conv_bn(64, 128), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * side * side, n_classes),
    )  # fmt: skip


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c, c), *_conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def resnet(in_channels: int = 1, n_classes: int = 10, width: int = 16) -> nn.Sequential:
    """ResNet-style: prep conv, [conv-BN-ReLU-pool + residual block] x 2, conv-pool, head.

    >>> count_params(resnet())
    153594
    """
    w = width
    return nn.Sequential(
        *_conv_bn(in_channels, w),
        *_conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w),  # 14x14
        *_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),  # 7x7
        *_conv_bn(4 * w, 4 * w), nn.MaxPool2d(2), _Residual(4 * w),  # 3x3
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * w, n_classes),
    )  # fmt: skip


def _conv_pool_bn(c_in: int, c_out: int) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    return [conv, nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU()]


def airnet(
    in_channels: int = 1, n_classes: int = 10, size: int = 28,
    widths: tuple[int, int, int] = (32, 64, 128),
) -> nn.Sequential:  # fmt: skip
    """airbench-style blocks: ``conv-pool-BN-ReLU`` three times (halving the side each
    time), one more ``conv-BN-ReLU`` after the second and third, a linear head.

    >>> count_params(airnet())
    289130
    >>> airnet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    w1, w2, w3 = widths
    side = size // 8
    return nn.Sequential(
        *_conv_pool_bn(in_channels, w1),
        *_conv_pool_bn(w1, w2), *_conv_bn(w2, w2),
        *_conv_pool_bn(w2, w3), *_conv_bn(w3, w3),
        nn.Flatten(), nn.Linear(w3 * side * side, n_classes),
    )  # fmt: skip


def airnet_wide(in_channels: int = 1, n_classes: int = 10, size: int = 28) -> nn.Sequential:
    """``airnet`` at 1.5x the width (48, 96, 192 channels): the ``best`` recipe's model,
    more accuracy for about twice the time per epoch.

    >>> count_params(airnet_wide())
    641050
    """
    return airnet(in_channels, n_classes, size, (48, 96, 192))


def cnn1d(length: int = 40, n_classes: int = 10, width: int = 24) -> nn.Sequential:
    """A 1-D CNN for MNIST-1D: three strided conv-ReLU layers and a linear head.

    >>> count_params(cnn1d())
    4858
    """
    out_len = length
    for _ in range(3):
        out_len = (out_len + 2 - 3) // 2 + 1
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, width, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * out_len, n_classes),
    )  # fmt: skip


def cnn1d_bn(length: int = 40, n_classes: int = 10, width: int = 64) -> nn.Sequential:
    """Four ``conv-BN-ReLU`` layers for MNIST-1D (kernel 5 then 3; stride 2 in the second
    and fourth: length 40 -> 10) and a linear head.

    >>> count_params(cnn1d_bn())
    44106
    """

    def conv(c_in: int, k: int, stride: int) -> list[nn.Module]:
        return [nn.Conv1d(c_in, width, k, stride, padding=k // 2, bias=False),
                nn.BatchNorm1d(width), nn.ReLU()]  # fmt: skip

    out_len = ((length + 1) // 2 + 1) // 2
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        *conv(1, 5, 1), *conv(width, 3, 2), *conv(width, 3, 1), *conv(width, 3, 2),
        nn.Flatten(), nn.Linear(width * out_len, n_classes),
    )  # fmt: skip


def mlp(in_features: int = 784, n_classes: int = 10, hidden: int = 256) -> nn.Sequential:
    """Flatten, two hidden ReLU layers of ``hidden`` units, a linear head.

    >>> count_params(mlp(40, 10, 100))
    15210
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )  # fmt: skip


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": cnn, "airnet": airnet, "airnet-wide": airnet_wide, "resnet": resnet,
    "cnn1d": cnn1d, "cnn1d-bn": cnn1d_bn, "mlp": mlp,
}  # fmt: skip
IMAGE_MODELS = ("cnn", "airnet", "airnet-wide", "resnet")
SEQUENCE_MODELS = ("cnn1d", "cnn1d-bn")


def get_model(name: str, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build zoo model ``name`` for inputs of ``input_shape`` (one sample, no batch dim)."""
    if name not in MODELS:
        raise ConfigError("model", name, f"one of {', '.join(MODELS)}")
    images = len(input_shape) == 3
    if name in IMAGE_MODELS:
        if not images:
            raise ConfigError("model", name, "cnn1d, cnn1d-bn or mlp for sequence data "
                              "(e.g. mnist1d)")  # fmt: skip
        if name == "resnet":
            return resnet(input_shape[0], n_classes)
        return MODELS[name](input_shape[0], n_classes, input_shape[-1])
    if name in SEQUENCE_MODELS:
        if len(input_shape) != 1:
            raise ConfigError("model", name, "cnn, airnet, airnet-wide, resnet or mlp for "
                              "image data")  # fmt: skip
        return MODELS[name](input_shape[0], n_classes)
    return mlp(math.prod(input_shape), n_classes, 100 if not images else 256)
