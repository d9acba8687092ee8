"""onecycle: Leslie Smith's training method made practical on PyTorch.

The LR range test, cyclical learning rates and the 1cycle policy with cyclical
momentum, as pure schedules applied to any ``torch.optim`` optimizer.
"""

from onecycle import schedules
from onecycle.errors import ConfigError
from onecycle.plots import plot_schedule
from onecycle.scheduler import ScheduleLR, Scheduler

__version__ = "0.1.0"

__all__ = ["ConfigError", "ScheduleLR", "Scheduler", "__version__", "plot_schedule", "schedules"]
