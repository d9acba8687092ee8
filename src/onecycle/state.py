"""What a callback sees of the training loop: ``TrainState``.

Callbacks, checkpoints, resuming and the parameter-group helpers sit below the loop
(``onecycle.loop``): the loop calls them, and they read and write its state. They are typed
against this ``Protocol`` rather than against the ``Learner``, so that no module below the
loop imports it, not even for type hints. Any object with these attributes will do, and a
``Learner`` has them all:

>>> import torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x, y = torch.randn(8, 2), torch.tensor([0, 1] * 4)
>>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 4),
...                 loss_func=torch.nn.functional.cross_entropy)
>>> missing = [a for a in TrainState.__annotations__ if not hasattr(learn, a)]
>>> missing
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["TrainState"]


class TrainState(Protocol):
    """The loop's state, as callbacks read or set it (``onecycle.loop.Loop`` defines each).

    The model and its training: ``model``, ``opt``, ``scheduler`` (the fit's
    ``onecycle.scheduler.Scheduler``), ``loss_func``, ``param_groups``, ``device``,
    ``train_data``, ``valid_data``. Where the loop is: ``epoch`` of ``n_epoch``, batch
    ``iter`` of ``n_iter``, the ``batch``, its ``pred``, ``loss`` and ``loss_global``
    (averaged over ranks), ``will_step`` (this micro-batch ends an accumulation group),
    ``epoch_completed``, ``valid_results``, ``step_values`` (the hyper-parameters the last
    step used). What callbacks set: ``accumulate``, ``autocast``, ``scaler``. What a fit
    carries: ``recorder``, ``cbs`` (the Learner's callbacks) and ``fit_cbs`` (this fit's),
    ``fit_plan``, ``fit_signature``, ``resuming``, ``run_config``, ``budget``, ``clock``,
    ``replicas``, and the auto search's results.
    """

    model: nn.Module
    opt: torch.optim.Optimizer | None
    scheduler: Any
    loss_func: Callable[[Any, Any], torch.Tensor] | None
    param_groups: list[list[nn.Parameter]]
    device: torch.device
    train_data: Iterable[Any]
    valid_data: Iterable[Any] | None
    epoch: int
    n_epoch: int
    iter: int
    n_iter: int
    batch: Any
    pred: Any
    loss: torch.Tensor
    loss_global: torch.Tensor
    will_step: bool
    epoch_completed: bool
    valid_results: dict[str, float]
    step_values: dict[str, list[float]]
    accumulate: int
    autocast: Callable[[], AbstractContextManager[Any]]
    scaler: torch.amp.GradScaler | None
    recorder: Any
    cbs: list[Any]
    fit_cbs: list[Any]
    fit_plan: dict[str, Any]
    fit_signature: str
    resuming: bool
    run_config: dict[str, Any]
    budget: Any
    clock: Callable[[], float]
    replicas: Any
    lr_find_result: Any
    auto_result: Any
    auto_wd_result: Any
    train_bn: bool

    def trainable_params(self) -> list[nn.Parameter]: ...

    def _make_opt(self, lrs: list[float]) -> None: ...
