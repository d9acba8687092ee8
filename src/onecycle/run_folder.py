"""A run's output folder (``--out``): held for one command, and written atomically.

``own_out`` checks the folder is writable, locks it against another process's command,
and (for a fresh run) refuses a folder holding another run's checkpoints unless
``overwrite``, which clears that run's files (``RUN_FILES``) first. ``_write_json`` writes
a file whole or not at all. Used by ``onecycle.run`` (which re-exports ``own_out``) and
``onecycle.study``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onecycle.checkpoint import checkpoints, clear
from onecycle.config import check_out
from onecycle.errors import ConfigError
from onecycle.lock import FolderLock, on_main

__all__ = ["own_out"]

log = logging.getLogger(__name__)


# what a run writes into its folder: cleared by overwrite (checkpoints/ apart)
RUN_FILES = ("metrics.json", "metrics.json.tmp", "loss.png", "schedule.png", "lr_find.png",
             "logs/steps.csv", "logs/epochs.csv")  # fmt: skip


@contextlib.contextmanager
def own_out(
    out: str | Path | None, *, fresh: bool = False, overwrite: bool = False
) -> Iterator[Path | None]:
    """Hold ``out`` for a command: checked writable (``check_out``), locked
    (``onecycle.lock.FolderLock``: another process's command on it is refused, naming its
    pid). With ``fresh`` (a run that starts from scratch), ``out/checkpoints`` must hold
    none of another run's checkpoints, or ``overwrite`` clears them, with the earlier
    run's metrics, plots and logs (logged). Under torchrun rank 0 checks and locks, and
    every rank gets its answer. ``out=None``: nothing to hold."""
    if not out:
        yield None
        return
    folder = Path(out)
    on_main(lambda: check_out(folder))  # refused now, not after hours of training
    with FolderLock(folder):
        if fresh:
            on_main(lambda: _claim_fresh(folder, overwrite))
        yield folder


def _claim_fresh(folder: Path, overwrite: bool) -> None:
    found = checkpoints(folder / "checkpoints")
    if found and not overwrite:
        raise ConfigError(
            "out", str(folder),
            f"a folder without another run's checkpoints: {folder / 'checkpoints'} holds "
            f"{len(found)} (newest {found[0].name}); resume=True (--resume) to continue "
            "that run, overwrite=True (--overwrite) to clear its checkpoints and metrics "
            "first, or another folder",
        )  # fmt: skip
    if not overwrite:
        return
    removed = [f"{len(clear(folder / 'checkpoints'))} checkpoints"] if found else []
    files = [*(folder / n for n in RUN_FILES), *(folder / "logs").glob("events.out.tfevents.*")]
    for f in files:
        if f.is_file():
            f.unlink()
            removed.append(str(f.relative_to(folder)))
    if removed:
        log.info("overwrite: cleared the earlier run in %s (%s)", folder, ", ".join(removed))


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(content, indent=1, default=str))
        os.replace(tmp, path)
    except OSError as e:  # disk full: no half-written file left (the CLI says it in one line)
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
