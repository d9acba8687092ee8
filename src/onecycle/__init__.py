"""onecycle: Leslie Smith's training method made practical on PyTorch.

The LR range test, cyclical learning rates and the 1cycle policy with cyclical
momentum, as pure schedules applied to any ``torch.optim`` optimizer, and a
``Learner`` whose loop reads top to bottom.
"""

from onecycle import schedules
from onecycle._version import __version__
from onecycle.callbacks import (
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    GradientAccumulation,
    GradientClip,
    MixedPrecision,
    NonFiniteGuard,
    NonFiniteLossError,
    ProgressBar,
    Recorder,
)
from onecycle.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWriteError,
    TrainingInterrupted,
)
from onecycle.errors import ConfigError
from onecycle.learner import Learner, accuracy, adamw, sgd
from onecycle.monitor import EarlyStopping, SaveBest
from onecycle.plots import plot_schedule

# the function, not the module: ``onecycle.range_test(model, opt, loss_func, batches)``
# (``from onecycle.range_test import range_test`` keeps working)
from onecycle.range_test import RangeTestResult, Step, range_test
from onecycle.run import Recipe, recipe
from onecycle.scheduler import ScheduleLR, Scheduler

__all__ = [
    "Callback",
    "CancelBatch",
    "CancelEpoch",
    "CancelFit",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWriteError",
    "ConfigError",
    "EarlyStopping",
    "GradientAccumulation",
    "GradientClip",
    "Learner",
    "MixedPrecision",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "ProgressBar",
    "RangeTestResult",
    "Recipe",
    "Recorder",
    "SaveBest",
    "ScheduleLR",
    "Scheduler",
    "Step",
    "TrainingInterrupted",
    "__version__",
    "accuracy",
    "adamw",
    "plot_schedule",
    "range_test",
    "recipe",
    "schedules",
    "sgd",
]
