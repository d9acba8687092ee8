import os

import pytest
import torch

# Two cores: keep tests from oversubscribing them; results do not depend on it.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # Nothing to do: slow tests run everywhere (CI included); `-m "not slow"` skips them by hand.
    return None


@pytest.fixture
def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
