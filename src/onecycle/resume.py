"""Resuming a Learner's fit: which checkpoint, and which plan it belongs to.

``resume_from`` finds the newest good checkpoint (a file, a folder, or ``"auto"``), checks
it belongs to this fit (``fit_signature``: length, accumulation, schedules) and restores
it (``onecycle.checkpoint.restore``). A fit's plan is its length and its extensions: with
``extend=True`` a checkpoint of a shorter run of the same fit is lengthened from its
saved step without a second warm-up (``onecycle.schedules.extend``), and the checkpoints
of the extended run record that, so a later resume rebuilds it.

>>> fit_signature({"n_epoch": 2, "total_steps": 10, "extends": []}, 1, {})
'n_epoch=2; total_steps=10; accumulate=1; schedules={}'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecycle import distributed as D
from onecycle.callbacks import Callback
from onecycle.checkpoint import Checkpoint, latest, load, restore
from onecycle.errors import ConfigError

if TYPE_CHECKING:
    from onecycle.state import TrainState

__all__ = ["find_checkpoint", "fit_signature", "resume_from"]

log = logging.getLogger("onecycle.checkpoint")  # the resume messages users know


def resume_from(
    learn: TrainState,
    resume: str | Path | Mapping[str, Any],
    cbs: Sequence[Callback] = (),
    *,
    plan: Callable[[int], Mapping[str, Any]] | None = None,
    extend: bool = False,
) -> tuple[int, int]:
    """Put the newest good checkpoint of ``resume`` (a file, a folder, or ``"auto"``: the
    folder of the ``Checkpoint`` in ``learn.cbs`` or ``cbs``) into ``learn``, whose fit is
    set up. Returns ``(epoch, batches_done)``, ``(0, 0)`` when there is no checkpoint yet.
    A path that does not exist is refused: a typo must not train from scratch. Under DDP
    rank 0 picks the file and every rank loads that one.

    ``plan``: the fit's schedules for a step count. A checkpoint of an extended run is
    resumed with its extensions rebuilt; with ``extend=True`` one of a shorter run of the
    same fit is lengthened to this fit's ``n_epoch`` from its saved step.

    ``resume`` may also be a state in memory (``onecycle.checkpoint.capture``'s dict: a
    prefix that ``lr_max="auto"`` trained, continued as the run itself)."""
    if isinstance(resume, Mapping):
        epoch, skip = restore(learn, dict(resume), "the search's prefix")
        return epoch, skip
    found = find_checkpoint(learn, resume, cbs)
    if found is None:
        folders = [c.folder for c in [*learn.cbs, *cbs] if isinstance(c, Checkpoint)]
        where = folders[0] if resume == "auto" and folders else resume
        log.info("no checkpoint in %s yet: starting fresh", where)
        return 0, 0
    source, state = found
    target = dict(learn.fit_plan)
    if plan is not None:
        _rebuild_plan(learn, state, plan, extend, str(source))
    _check_accumulation(learn, state, str(source))
    epoch, skip = restore(learn, state, str(source))
    step = learn.scheduler.step_count if learn.scheduler else 0
    if plan is not None and learn.fit_plan["total_steps"] < target["total_steps"]:
        _lengthen(learn, plan, target, step)
    log.info("resumed from %s: epoch %d, %d batches in, optimizer step %d",
             source, epoch, skip, step)  # fmt: skip
    return epoch, skip


def find_checkpoint(
    learn: TrainState, resume: str | Path, cbs: Sequence[Callback] = ()
) -> tuple[Path, dict[str, Any]] | None:
    """The newest good checkpoint of ``resume`` (a file, a folder, or ``"auto"``: the
    folder of the ``Checkpoint`` in ``learn.cbs`` or ``cbs``) and its state; None when
    there is none yet. A path that does not exist is refused. Under DDP rank 0 picks the
    file and every rank loads that one."""
    auto = resume == "auto"
    if auto:
        folders = [c.folder for c in [*learn.cbs, *cbs] if isinstance(c, Checkpoint)]
        if not folders:
            raise ConfigError("resume", "auto", "a path, or a Checkpoint callback in cbs")
        resume = folders[0]
    path = Path(resume)
    if not path.exists() and not auto:
        raise ConfigError("resume", str(resume), "an existing checkpoint file or folder "
                          "(resume='auto' starts fresh when there is none yet)")  # fmt: skip
    if D.is_distributed():
        pick = None
        if D.is_main():
            newest = latest(path) if path.is_dir() or not path.exists() else None
            pick = str(newest[0]) if newest else (str(path) if path.is_file() else None)
        pick = D.broadcast_object(pick)
        return None if pick is None else (Path(pick), load(pick))
    return latest(path) if path.is_dir() or not path.exists() else (path, load(path))


def fit_signature(plan: Mapping[str, Any], accumulate: int, spec: Mapping[str, Any]) -> str:
    """What a checkpoint must match to resume a fit: its length, accumulation and
    schedules (``spec`` built for ``plan["base_total"]`` steps), its extensions, and its
    time budget (a resume with another one is refused: the progress of the steps taken
    was time over that budget)."""
    sig = (f"n_epoch={plan['n_epoch']}; total_steps={plan['total_steps']}; "
           f"accumulate={accumulate}; schedules={spec!r}")  # fmt: skip
    sig += f"; extends={plan['extends']}" if plan["extends"] else ""
    return sig + (f"; budget={plan['budget']:g}s" if plan.get("budget") else "")


_SIGNATURE = re.compile(r"^n_epoch=(\d+); total_steps=(\d+);")


def _plan_of(state: dict[str, Any]) -> dict[str, Any] | None:
    """The saved fit's length and extensions (read from its signature in checkpoints
    written before they were stored)."""
    if state.get("plan"):
        return dict(state["plan"])
    m = _SIGNATURE.match(str(state.get("fit") or ""))
    if m is None:
        return None
    n, total = int(m[1]), int(m[2])
    return {"n_epoch": n, "total_steps": total, "base_total": total, "extends": []}


def _rebuild_plan(learn: TrainState, state: dict[str, Any],
                  plan: Callable[[int], Mapping[str, Any]], extend: bool,
                  source: str) -> None:  # fmt: skip
    """Set up ``learn`` as the saved fit was (its length, its extensions) so that
    ``restore`` can check and load it; refuse what cannot be extended."""
    from onecycle.scheduler import Scheduler

    saved, now = _plan_of(state), learn.fit_plan
    if saved is None or (
        (saved["n_epoch"], saved["total_steps"]) == (now["n_epoch"], now["total_steps"])
        and not saved["extends"]
    ):
        return  # a plain resume: restore() compares the signatures
    if saved.get("budget") or now.get("budget"):
        return  # not extended by epochs: restore() compares the signatures, budget included
    changed = what_changed(learn, state, saved)
    longer = saved["total_steps"] < now["total_steps"]
    if changed or saved["total_steps"] > now["total_steps"] or (longer and not extend):
        if changed:  # the steps per epoch differ: --extend cannot help
            hint = ("resume with the run's own settings, or start a fresh run "
                    "(overwrite=True, onecycle fit --overwrite)")  # fmt: skip
        elif longer:
            hint = ("this fit is longer with the same steps per epoch: extend=True "
                    "(onecycle fit --extend) to lengthen it")  # fmt: skip
        else:
            hint = ("a run cannot be shortened: resume it with a longer fit (its "
                    f"{saved['n_epoch']} epochs), or start a fresh run")  # fmt: skip
        raise ConfigError(
            "resume", source,
            f"a checkpoint of this same fit: it was planned for {_length(saved)}, this fit for "
            f"{_length(now)}" + (f": {', '.join(changed)}" if changed else "")
            + f"; {hint}",
        )  # fmt: skip
    assert learn.opt is not None
    base = plan(saved["base_total"])
    sched = Scheduler(learn.opt, base, saved["base_total"])
    for _, to, at in saved["extends"]:
        sched.extend(to, at)
    learn.scheduler, learn.fit_plan = sched, saved
    learn.fit_signature = fit_signature(saved, learn.accumulate, base)


def _check_accumulation(learn: TrainState, state: Mapping[str, Any], source: str) -> None:
    """A resume with the same step count but another accumulation: say so, not the two
    signatures (``restore`` compares them)."""
    m = _ACCUMULATE.search(str(state.get("fit") or ""))
    if m is not None and int(m[1]) != learn.accumulate:
        raise ConfigError("resume", source, f"a checkpoint of this same fit: the accumulation "
                          f"changed ({m[1]} -> {learn.accumulate} batches per step); resume "
                          "with the run's own settings, or start a fresh run")  # fmt: skip


def _length(plan: Mapping[str, Any]) -> str:
    n, total = int(plan["n_epoch"]), int(plan["total_steps"])
    per = f" of {total // n}" if total % n == 0 else ""
    return f"{n} epoch{'s' if n != 1 else ''}{per} steps ({total} steps)"


_ACCUMULATE = re.compile(r"; accumulate=(\d+);")


def what_changed(
    learn: TrainState, state: Mapping[str, Any], saved: Mapping[str, Any]
) -> list[str]:
    """Why a checkpoint's run takes other steps per epoch than this fit: ``["batch size 100
    -> 50", "processes 1 -> 2", ...]``; empty when only the number of epochs differs."""
    now = learn.fit_plan
    if saved["total_steps"] * now["n_epoch"] == now["total_steps"] * saved["n_epoch"]:
        return []  # the same steps per epoch
    changed = []
    was = state.get("config") or {}
    bs_was, bs_now = was.get("bs"), learn.run_config.get("bs")
    if bs_was is not None and bs_now is not None and bs_was != bs_now:
        changed.append(f"the batch size changed ({bs_was} -> {bs_now})")
    m = _ACCUMULATE.search(str(state.get("fit") or ""))
    if m is not None and int(m[1]) != learn.accumulate:
        changed.append(f"the accumulation changed ({m[1]} -> {learn.accumulate} batches per step)")
    written_by = int(state.get("world_size", 1))
    if written_by != D.world_size():
        changed.append(f"the processes changed ({written_by} -> {D.world_size()})")
    ts_was, ts_now = was.get("train_samples"), learn.run_config.get("train_samples")
    if was and learn.run_config and ts_was != ts_now:
        changed.append(f"the training samples changed ({ts_was} -> {ts_now})")
    per = [int(p["total_steps"]) / int(p["n_epoch"]) for p in (saved, now)]
    if not changed:
        changed.append(f"the steps per epoch changed ({per[0]:g} -> {per[1]:g}: the batch "
                       "size or the data)")  # fmt: skip
    if saved["n_epoch"] != now["n_epoch"]:
        changed.append(f"the epochs changed ({saved['n_epoch']} -> {now['n_epoch']})")
    return changed


def _lengthen(learn: TrainState, plan: Callable[[int], Mapping[str, Any]],
              target: dict[str, Any], step: int) -> None:  # fmt: skip
    """After restoring a shorter run: extend its schedule to ``target`` from ``step``."""
    assert learn.scheduler is not None
    saved = learn.fit_plan
    learn.scheduler.extend(target["total_steps"], at=step)
    extension = [saved["total_steps"], target["total_steps"], step]
    learn.fit_plan = {**target, "base_total": saved["base_total"],
                      "extends": [*saved["extends"], extension]}  # fmt: skip
    learn.fit_signature = fit_signature(learn.fit_plan, learn.accumulate, plan(saved["base_total"]))
    log.info("extended the run from %d to %d steps at step %d (warm-up not restarted)",
             saved["total_steps"], target["total_steps"], step)  # fmt: skip
