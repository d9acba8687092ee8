"""Data: readers for Fashion-MNIST and MNIST-1D, and a fast in-memory loader."""

from onecycle.data.datasets import (
    DataError,
    Splits,
    find_fashion_mnist,
    load_fashion_mnist,
    load_mnist1d,
    read_idx,
)
from onecycle.data.loader import Loader

__all__ = [
    "DataError",
    "Loader",
    "Splits",
    "find_fashion_mnist",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist1d",
    "read_idx",
]

DATASETS = ("fashion-mnist", "mnist1d")


def load_dataset(name: str, data_dir: str | None = None, *, download: bool = False) -> Splits:
    """Load a data set by its CLI name: ``"fashion-mnist"`` or ``"mnist1d"``."""
    from onecycle.errors import ConfigError

    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, download=download)
    if name == "mnist1d":
        return load_mnist1d()
    raise ConfigError("dataset", name, f"one of {', '.join(DATASETS)}")
