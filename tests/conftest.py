import os

import pytest
import torch

# Two cores: keep tests from oversubscribing them; results do not depend on it.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # Nothing to do: slow tests run everywhere (CI included); `-m "not slow"` skips them by hand.
    return None


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def in_ci() -> bool:
    return running_in_ci()


def need(module: str):
    """Import an optional extra for a test module: skipped on a user's machine without it,
    never under CI=true (where `make test` installs it), which fails on the import."""
    if running_in_ci():
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)
