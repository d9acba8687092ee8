"""Checkpoint files: written so that they survive a kill, read so that they cannot run code.

A checkpoint is one ``torch.save`` file plus a manifest beside it (``<file>.manifest``,
JSON: size, SHA-256, format). Both are written atomically: a temporary file in the same
folder, ``fsync``, ``os.replace``, ``fsync`` of the folder. The manifest is written last,
so a checkpoint without one is incomplete. Loading checks the manifest, then uses
``torch.load(weights_only=True)``: nothing in a checkpoint can run code, and a file that
would need arbitrary unpickling is refused. ``latest`` walks back from the newest file to
the newest *good* one and says which it skipped and why. What goes into a checkpoint, and
the ``Checkpoint`` callback that writes them during a fit, are in ``onecycle.checkpoint``.

>>> import tempfile, torch
>>> folder = Path(tempfile.mkdtemp())
>>> path = save({"format": FORMAT_VERSION, "model": {"w": torch.ones(2)}},
...             folder / "ckpt-e0000-s00000004.pt")
>>> load(path)["model"]["w"].tolist(), [p.name for p in checkpoints(folder)]
([1.0, 1.0], ['ckpt-e0000-s00000004.pt'])
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION", "CheckpointError", "CheckpointWriteError", "checkpoints", "clear",
    "latest", "load", "save",
]  # fmt: skip

log = logging.getLogger("onecycle.checkpoint")  # the messages users know

FORMAT_VERSION = 1
"""The checkpoint format this onecycle writes and reads."""
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, torn, corrupt, unsafe, or does not fit this run."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, permissions): training stops; the
    previous checkpoint is untouched and ``resume`` continues from it."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupted: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically to ``path`` with its manifest; refuse non-finite weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, t in state.get("model", {}).items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"not saving {path.name}: model tensor {name!r} is not finite")
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    manifest = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "format": FORMAT_VERSION}  # fmt: skip
    mpath = path.with_name(path.name + ".manifest")
    try:
        _write_atomic(path, data)
        _write_atomic(mpath, json.dumps(manifest).encode())
    except OSError as e:
        for p in (mpath, path):  # the file without its manifest is incomplete: drop both
            p.unlink(missing_ok=True)
        previous = next((p.name for p in checkpoints(path.parent) if p != path), None)
        kept = f"the previous checkpoint ({previous}) is intact" if previous else (
            "no earlier checkpoint")  # fmt: skip
        raise CheckpointWriteError(
            f"could not write checkpoint {path.name} into {path.parent} "
            f"({e.strerror or e}); training stopped, {kept}: free space there and run "
            "again with resume"
        ) from None
    return path


def load(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint: manifest check (unless ``verify=False``), then ``weights_only``.

    Raises ``CheckpointError`` naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    data = path.read_bytes()
    if verify:
        mpath = path.with_name(path.name + ".manifest")
        if not mpath.exists() and not _NAME.match(path.name):
            raise CheckpointError(
                f"{path}: not a onecycle checkpoint (a checkpoint is a ckpt-eEEEE-sSSSSSSSS.pt "
                "file with its .manifest beside it, written by the Checkpoint callback or "
                "onecycle fit into OUT/checkpoints)"
            )
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError):
            raise CheckpointError(
                f"{path}: incomplete (no readable {mpath.name}: its write was interrupted); "
                "resume from the folder to use the newest complete one"
            ) from None
        if manifest.get("size") != len(data):
            raise CheckpointError(
                f"{path}: torn or truncated ({len(data)} bytes, "
                f"manifest says {manifest.get('size')})"
            )
        if manifest.get("sha256") != hashlib.sha256(data).hexdigest():
            raise CheckpointError(f"{path}: corrupt (SHA-256 differs from its manifest)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused, it needs arbitrary unpickling ({first})") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        fmt = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: format {fmt!r}, this onecycle reads {FORMAT_VERSION}")
    return state


def checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoint files in ``folder``, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found, reverse=True)]


def clear(folder: str | Path) -> list[Path]:
    """Remove every checkpoint in ``folder``, with its manifest and any temporary file a
    killed write left; returns the checkpoints removed (``overwrite=True``)."""
    folder = Path(folder)
    found = checkpoints(folder)
    for p in found:
        for f in (p, p.with_name(p.name + ".manifest")):
            f.unlink(missing_ok=True)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".ckpt-") and ".tmp-" in p.name:
                p.unlink(missing_ok=True)
    return found


def latest(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that loads and verifies; None if there is none.

    Each newer one that fails is skipped with a warning that names it and the reason.
    """
    for path in checkpoints(folder):
        try:
            return path, load(path)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s; falling back to the previous one", e)
    return None
