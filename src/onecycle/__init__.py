"""onecycle: Leslie Smith's training method made practical on PyTorch.

The LR range test, cyclical learning rates and the 1cycle policy with cyclical
momentum, as pure schedules applied to any ``torch.optim`` optimizer, and a
``Learner`` whose loop reads top to bottom.
"""

from onecycle import schedules
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
from onecycle.checkpoint import Checkpoint, CheckpointError, TrainingInterrupted
from onecycle.errors import ConfigError
from onecycle.learner import Learner, accuracy, adamw, sgd
from onecycle.plots import plot_schedule
from onecycle.scheduler import ScheduleLR, Scheduler

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CancelBatch",
    "CancelEpoch",
    "CancelFit",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "GradientAccumulation",
    "GradientClip",
    "Learner",
    "MixedPrecision",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "ProgressBar",
    "Recorder",
    "ScheduleLR",
    "Scheduler",
    "TrainingInterrupted",
    "__version__",
    "accuracy",
    "adamw",
    "plot_schedule",
    "schedules",
    "sgd",
]
