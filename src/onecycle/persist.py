"""``learn.save(path)`` and ``learn.load(path)``: a trained Learner's weights and optimizer
in the checkpoint format (``onecycle.checkpoint``).

The file is written atomically with its SHA-256 manifest beside it, and loaded with
``torch.load(weights_only=True)`` after the manifest check: nothing in it can run code.
It holds the model's state dict, the optimizer's (unless ``with_opt=False``), the
Recorder's history and the run's config. ``load`` also reads the checkpoints the
``Checkpoint`` callback and ``onecycle fit --out`` write (``OUT/checkpoints/ckpt-*.pt``).
A file that does not fit the Learner is refused before anything changes, with what does
not match: the tensors whose shapes differ or that are missing, or the optimizer's
param groups.

>>> import tempfile, torch
>>> from onecycle import Learner
>>> from onecycle.data import Loader
>>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
>>> make = lambda: Learner(torch.nn.Linear(2, 2), Loader(x, y, 16),
...                        loss_func=torch.nn.functional.cross_entropy)
>>> learn = make()
>>> learn.fit_one_cycle(1, 0.1)
>>> path = learn.save(tempfile.mkdtemp() + "/model.pt")
>>> other = make()
>>> other.load(path)
>>> torch.equal(other.model.weight, learn.model.weight)
True
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from onecycle import checkpoint as C

__all__ = ["load", "save"]

log = logging.getLogger("onecycle.checkpoint")


class _Learner(Protocol):
    """What saving and loading read from and write to a Learner."""

    model: nn.Module
    opt: torch.optim.Optimizer | None
    param_groups: list[list[nn.Parameter]]
    run_config: dict[str, Any]
    recorder: Any

    def _make_opt(self, lrs: list[float]) -> None: ...


def save(learn: _Learner, path: str | Path, *, with_opt: bool = True) -> Path:
    """Write the model's weights (and the optimizer's state, unless ``with_opt=False``) to
    ``path``, atomically, with a manifest beside it; returns the path. Non-finite weights
    are refused (``CheckpointError``)."""
    state = {
        "format": C.FORMAT_VERSION,
        "versions": {"onecycle": C._version(), "torch": str(torch.__version__)},
        "kind": "learner",
        "model": {k: v.detach().cpu().clone() for k, v in learn.model.state_dict().items()},
        "optimizer": learn.opt.state_dict() if with_opt and learn.opt is not None else None,
        "recorder": learn.recorder.state_dict(),
        "config": learn.run_config,
    }
    return C.save(state, path)


def load(learn: _Learner, path: str | Path, *, with_opt: bool = True) -> None:
    """Load what ``save`` (or a ``Checkpoint``) wrote into this Learner: the weights, and
    the optimizer's state when the file has one and ``with_opt`` (the optimizer is made
    first if no fit made it yet). Raises ``CheckpointError`` naming the file and what
    does not match, before anything is changed."""
    state = C.load(path)
    source = str(path)
    why = C.model_mismatch(learn.model, state["model"])
    saved_opt = state.get("optimizer") if with_opt else None
    if why is None and saved_opt is not None:
        if learn.opt is None:
            groups = saved_opt.get("param_groups", [])
            lrs = [float(g.get("lr", 1e-3)) for g in groups]
            if len(lrs) == len(learn.param_groups):
                learn._make_opt(lrs)
            else:
                why = (f"the file's optimizer has {len(lrs)} param group(s), this Learner "
                       f"{len(learn.param_groups)} (its splitter)")  # fmt: skip
        if learn.opt is not None and why is None:
            why = C.optimizer_mismatch(learn.opt, saved_opt)
    if why is not None:
        raise C.CheckpointError(f"{source}: does not fit this Learner: {why}")
    with torch.no_grad():
        learn.model.load_state_dict(state["model"])
    if saved_opt is not None and learn.opt is not None:
        learn.opt.load_state_dict(saved_opt)
    if state.get("recorder"):
        learn.recorder.load_state_dict(state["recorder"])
    if state.get("config"):
        learn.run_config = dict(state["config"])
    log.info("loaded %s%s", source, "" if saved_opt is not None else " (weights only)")
