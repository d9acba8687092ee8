"""Checkpoints that survive a kill, load safely and resume bit-exactly.

The files themselves (atomic writes with a manifest, safe loading, the newest good one in
a folder) are ``onecycle.checkpoint_files``, re-exported here. This module holds what goes
into them (``capture``, ``restore``) and the ``Checkpoint`` callback that writes them
during a fit, stops cleanly on SIGINT/SIGTERM and keeps its folder for one run.

What a checkpoint holds: model, optimizer, scheduler step, epoch and batches consumed,
the loader's position, the torch/CUDA/numpy/python random states, the Recorder's history,
a signature of the fit (epochs, steps, schedules, time budget), its plan (length and
extensions: what ``resume(extend=True)`` rebuilds), a time budget's time used and pace
(``onecycle.budget``), the run's config, format and library versions. All plain types
and tensors.
"""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from onecycle import distributed as D
from onecycle._version import __version__
from onecycle.callbacks import Callback
from onecycle.checkpoint_files import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    checkpoints,
    clear,
    latest,
    load,
    save,
)
from onecycle.errors import ConfigError, check_int
from onecycle.lock import FolderLock, on_main

if TYPE_CHECKING:
    from onecycle.state import TrainState

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWriteError",
    "TrainingInterrupted",
    "clear",
    "latest",
    "load",
    "save",
]

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived: the step finished, a checkpoint was written, training stopped."""

    def __init__(self, signum: int, path: Path | None, epoch: int, step: int) -> None:
        self.signum, self.path, self.epoch, self.step = signum, path, epoch, step
        name = signal.Signals(signum).name
        where = f"checkpoint {path}" if path else "no checkpoint (no Checkpoint folder)"
        super().__init__(
            f"stopped by {name} after optimizer step {step} (epoch {epoch}); {where}; "
            "run again with resume to continue exactly"
        )


# --- what a learner's state is ------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and python random states, in types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(gauss)],
        "python": [int(version), list(py_state), py_gauss],
    }  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def model_mismatch(model: torch.nn.Module, saved: dict[str, Any]) -> str | None:
    """What keeps ``saved`` (a state dict) from loading into ``model``, in words; None if
    it fits: the tensors whose shapes differ, those missing on either side."""
    mine = model.state_dict()
    shapes = [
        f"{k} is {tuple(saved[k].shape)} in the file, {tuple(v.shape)} here"
        for k, v in mine.items()
        if k in saved and torch.is_tensor(saved[k]) and saved[k].shape != v.shape
    ]
    missing = [k for k in mine if k not in saved]
    extra = [k for k in saved if k not in mine]
    parts = []
    for what, names in (("shapes differ", shapes), ("not in the file", missing),
                        ("in the file, not in this model", extra)):  # fmt: skip
        if names:
            more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
            parts.append(f"{what}: {', '.join(names[:3])}{more}")
    return "; ".join(parts) or None


def optimizer_mismatch(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> str | None:
    """What keeps ``saved`` (an optimizer's state dict) from loading into ``opt``; None if
    it fits: other param groups, another kind of optimizer, other tensor shapes."""
    groups = saved.get("param_groups", [])
    theirs, mine = [len(g["params"]) for g in groups], [len(g["params"]) for g in opt.param_groups]
    if theirs != mine:
        return (f"the file's optimizer has {len(theirs)} param group(s) of {theirs} tensors, "
                f"this one {len(mine)} of {mine}")  # fmt: skip
    for key in ("momentum", "betas"):
        if groups and (key in groups[0]) != (key in opt.param_groups[0]):
            return (f"the file's optimizer {'has' if key in groups[0] else 'has no'} {key!r}, "
                    f"this {type(opt).__name__} {'has' if key in opt.param_groups[0] else 'has no'}"
                    " (another kind of optimizer)")  # fmt: skip
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, st in saved.get("state", {}).items():
        i = int(i)
        for name, t in st.items():
            if torch.is_tensor(t) and t.dim() > 0 and i < len(params) and (
                t.shape != params[i].shape
            ):  # fmt: skip
                return (f"the file's optimizer state {name!r} of tensor {i} is {tuple(t.shape)}, "
                        f"the parameter here is {tuple(params[i].shape)}")  # fmt: skip
    return None


def _stateful(cbs: list[Callback]) -> dict[str, Any]:
    """The callbacks whose state a checkpoint keeps (those with ``state_dict`` and
    ``load_state_dict``, the Recorder aside), by class name (``#2`` for a second one)."""
    out: dict[str, Any] = {}
    for cb in cbs:
        if hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict") and (
            type(cb).__name__ != "Recorder"
        ):  # fmt: skip
            name, k = type(cb).__name__, 2
            while name in out:
                name, k = f"{type(cb).__name__}#{k}", k + 1
            out[name] = cb
    return out


def capture(learn: TrainState, *, epoch: int, batches_done: int) -> dict[str, Any]:
    """The learner's full state at an optimizer-step boundary.

    ``epoch`` and ``batches_done`` say where the data order resumes.
    """
    assert learn.opt is not None and learn.scheduler is not None
    loader = learn.train_data
    # under DDP every rank calls this (a collective): each rank's random state is kept
    rngs = D.all_gather_object(rng_state()) if D.is_distributed() else None
    return {
        "format": FORMAT_VERSION,
        "versions": {"onecycle": _version(), "torch": str(torch.__version__)},
        "model": {k: v.detach().cpu().clone() for k, v in learn.model.state_dict().items()},
        "optimizer": learn.opt.state_dict(),
        "scheduler": learn.scheduler.state_dict(),
        "position": {
            "epoch": epoch,
            "batches_done": batches_done,
            "n_epoch": learn.n_epoch,
            "step": learn.scheduler.step_count,
        },
        "loader": loader.state_dict() if hasattr(loader, "state_dict") else None,
        "rng": rng_state(),
        "rng_ranks": rngs,
        "world_size": D.world_size(),
        "recorder": learn.recorder.state_dict(),
        "fit": learn.fit_signature,
        "plan": learn.fit_plan,  # its length and extensions: what resume(extend=True) rebuilds
        "budget": learn.budget.state_dict() if learn.budget is not None else None,
        "config": learn.run_config,
        "callbacks": {k: cb.state_dict() for k, cb in _stateful(learn.fit_cbs).items()},
    }


def restore(
    learn: TrainState, state: dict[str, Any], source: str = "checkpoint"
) -> tuple[int, int]:
    """Put ``state`` into ``learn`` (whose fit was set up with the same schedules).

    Returns ``(epoch, batches_done)``: where training continues. ``learn.load(path)`` puts
    only the weights and optimizer of a checkpoint into a Learner that is not fitting.
    """
    if learn.opt is None or learn.scheduler is None:
        raise CheckpointError(
            f"{source}: restore() continues a fit that is set up (its optimizer and scheduler "
            "exist): pass resume=path to fit / fit_one_cycle, or learn.load(path) for the "
            "weights and optimizer alone"
        )
    written_by, now = int(state.get("world_size", 1)), D.world_size()
    if written_by != now:
        raise CheckpointError(
            f"{source}: written by a {written_by}-process run, this run has {now}: resume "
            f"with {written_by} process(es) (the data shards, steps per epoch and schedule "
            "depend on it), or start a fresh run"
        )
    if state.get("fit") != learn.fit_signature:
        raise ConfigError(
            "resume", source,
            f"a checkpoint of this same fit; it was made by {state.get('fit')!r}, "
            f"this fit is {learn.fit_signature!r}",
        )  # fmt: skip
    why = model_mismatch(learn.model, state["model"])
    if why is None:
        why = optimizer_mismatch(learn.opt, state["optimizer"])
    if why is not None:
        raise CheckpointError(f"{source}: does not fit this Learner: {why}")
    try:
        learn.model.load_state_dict(state["model"])
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"{source}: does not fit this model: {detail}") from None
    learn.opt.load_state_dict(state["optimizer"])
    saved = state.get("callbacks") or {}
    for key, cb in _stateful(learn.fit_cbs).items():
        if key in saved:
            cb.load_state_dict(saved[key])
        else:
            log.warning("%s: holds no state for the %s callback: it starts afresh", source, key)
    learn.scheduler.load_state_dict(state["scheduler"])
    if learn.budget is not None and state.get("budget") is not None:
        learn.budget.load_state_dict(state["budget"])  # the time used goes on counting
    pos = state["position"]
    if state.get("loader") is not None and hasattr(learn.train_data, "load_state_dict"):
        learn.train_data.load_state_dict(
            {**state["loader"], "epoch": pos["epoch"], "batches_done": pos["batches_done"]}
        )
    learn.recorder.load_state_dict(state["recorder"])
    set_rng_state(state["rng_ranks"][D.rank()] if state.get("rng_ranks") else state["rng"])
    return int(pos["epoch"]), int(pos["batches_done"])


class Checkpoint(Callback):
    """Write checkpoints to ``folder``: every ``every`` optimizer steps (if given) and at
    each epoch end, keeping the newest ``keep``. Also turns SIGINT/SIGTERM into "finish
    this step, checkpoint, stop" (``TrainingInterrupted``).

    Resume with ``learn.fit_one_cycle(..., resume="auto")`` (the newest good checkpoint
    here) or ``resume=path``.

    The folder is this fit's alone: it is locked for the fit (``onecycle.lock``; another
    process's fit into it is refused, naming its pid), and a fresh fit (no ``resume``)
    into a folder that holds checkpoints of another run is refused unless
    ``overwrite=True``, which removes them first (logged): a later resume must not pick
    up another run's newest checkpoint.
    """

    order = 97  # after the Recorder has recorded the step

    def __init__(
        self,
        folder: str | Path,
        every: int | None = None,
        keep: int = 3,
        signals: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.every = None if every is None else check_int("every", every)
        self.keep = check_int("keep", keep)
        self.signals = signals
        if not isinstance(overwrite, bool):
            raise ConfigError("overwrite", overwrite, "True or False")
        self.overwrite = overwrite
        self._lock = FolderLock(self.folder, "folder")
        self._signal: int | None = None
        self._old: dict[int, Any] = {}
        self.last: Path | None = None
        self.written: list[Path] = []  # by this callback, oldest first
        self._fit_start = 0  # where this fit's files begin in ``written``

    def before_fit(self, learn: TrainState) -> None:
        self._signal = None
        self._fit_start = len(self.written)
        self._lock.acquire()  # released in after_fit, which runs however the fit ends
        on_main(lambda: self._claim(bool(getattr(learn, "resuming", False))))
        if self.signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._on_signal)
                except ValueError:  # not the main thread: no handlers, no interruption
                    break

    def _claim(self, resuming: bool) -> None:
        """A fresh fit: no other run's checkpoints in the folder (or remove them)."""
        if resuming:
            return
        others = [p for p in checkpoints(self.folder) if p not in self.written]
        if others and not self.overwrite:
            raise ConfigError(
                "folder", str(self.folder),
                f"a folder without another run's checkpoints: it holds {len(others)} (newest "
                f"{others[0].name}); resume='auto' to continue that run, "
                "Checkpoint(..., overwrite=True) to remove them first, or another folder",
            )  # fmt: skip
        if others:
            for p in others:
                for f in (p, p.with_name(p.name + ".manifest")):
                    f.unlink(missing_ok=True)
            log.info("overwrite: removed %d checkpoints of an earlier run from %s",
                     len(others), self.folder)  # fmt: skip

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal is not None:  # second signal: give up waiting for the step
            raise KeyboardInterrupt
        self._signal = signum
        log.warning("%s received: finishing this step, then checkpoint and stop",
                    signal.Signals(signum).name)  # fmt: skip

    def _save(self, learn: TrainState, epoch: int, batches_done: int) -> Path:
        assert learn.scheduler is not None
        step = learn.scheduler.step_count
        path = self.folder / f"ckpt-e{epoch:04d}-s{step:08d}.pt"
        state = capture(learn, epoch=epoch, batches_done=batches_done)  # every rank
        if D.is_main():  # under DDP only rank 0 writes
            save(state, path)
            for old in checkpoints(self.folder)[self.keep :]:
                for p in (old, old.with_name(old.name + ".manifest")):
                    p.unlink(missing_ok=True)
        D.barrier()  # no rank moves on before the checkpoint is on disk
        self.last = path
        self.written.append(path)
        return path

    def discard_fit(self, since: int | None = None) -> None:
        """Remove the checkpoints written from ``written[since]`` on (default: this fit's
        first): they belong to an attempt that was abandoned and run again
        (``onecycle.fallback``; an attempt of ``fine_tune`` is two fits), and a resume must
        not find them."""
        start = self._fit_start if since is None else since
        if D.is_main():
            for p in self.written[start:]:
                for f in (p, p.with_name(p.name + ".manifest")):
                    f.unlink(missing_ok=True)
        del self.written[start:]
        self._fit_start = min(self._fit_start, start)
        self.last = None

    def _signalled(self, learn: TrainState) -> bool:
        """Did this process (or, under DDP, any rank) receive SIGINT/SIGTERM?"""
        if not D.is_distributed():
            return self._signal is not None
        flag = torch.tensor([0 if self._signal is None else 1], device=learn.device)
        D.all_reduce_sum(flag)
        if flag.item() and self._signal is None:
            self._signal = int(signal.SIGTERM)  # a peer was told to stop: stop with it
        return bool(flag.item())

    def _stop(self, learn: TrainState, path: Path | None) -> None:
        assert learn.scheduler is not None and self._signal is not None
        raise TrainingInterrupted(self._signal, path, learn.epoch, learn.scheduler.step_count)

    def after_step(self, learn: TrainState) -> None:
        assert learn.scheduler is not None
        due = self.every is not None and learn.scheduler.step_count % self.every == 0
        stop = self._signalled(learn)  # under DDP: the same answer on every rank
        path = self._save(learn, learn.epoch, learn.iter + 1) if stop or due else None
        if stop:
            self._stop(learn, path)

    def after_epoch(self, learn: TrainState) -> None:
        if not learn.epoch_completed:  # an error or an interruption is on its way up
            return
        path = self._save(learn, learn.epoch + 1, 0)
        if self._signalled(learn):
            self._stop(learn, path)

    def after_fit(self, learn: TrainState) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        self._lock.release()


def _version() -> str:
    return __version__
