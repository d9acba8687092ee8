"""A run owns its folder (issue 31): one writer per folder (a lock that two real CLI
processes meet), a fresh run never mixes its checkpoints with another run's, and a disk
that fills up mid-checkpoint leaves nothing a resume could pick up. See
docs/reliability.md, "One run, one folder"."""

import contextlib
import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Checkpoint, ConfigError, Learner
from onecycle import checkpoint as ck
from onecycle import checkpoint_files as ck_files
from onecycle import distributed as D
from onecycle.cli import main
from onecycle.data import Loader
from onecycle.lock import LOCK_FILE, FolderInUse, FolderLock

FIT = ("fit", "--dataset", "mnist1d", "--train-samples", "400", "--no-progress")


def _cli(*argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(list(argv))
    return rc, [ln for ln in err.getvalue().splitlines() if ln.strip()], out.getvalue()


def _learner():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    return Learner(model, Loader(x, y, 32), Loader(x, y, 128, shuffle=False),
                   loss_func=F.cross_entropy)  # fmt: skip


def _wait(cond, what, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _holder_pid(folder: Path) -> int | None:
    try:
        return json.loads((folder / LOCK_FILE).read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


# --- 1. two processes, one folder ---------------------------------------------------------------

# a factory that holds the first run in its folder (lock taken) until the test says go
HOLD = """
import pathlib, time
import torch, torch.nn.functional as F
from onecycle.data import Loader

def make():
    go = pathlib.Path(__file__).with_name("go")
    deadline = time.monotonic() + 300
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g); y = (x[:, 0] > 0).long()
    valid = Loader(x, y, 128, shuffle=False)
    return torch.nn.Linear(4, 2), Loader(x, y, 32), valid, F.cross_entropy
"""


def test_two_cli_processes_on_one_folder_the_second_is_refused(tmp_path):
    (tmp_path / "hold.py").write_text(HOLD)
    out = tmp_path / "c1"
    first = subprocess.Popen(
        [sys.executable, "-m", "onecycle", "fit", "--factory", f"{tmp_path / 'hold.py'}:make",
         "--epochs", "3", "--lr-max", "0.1", "--checkpoint-every", "10", "--no-progress",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait(lambda: _holder_pid(out) == first.pid or first.poll() is not None, "the lock")
        assert first.poll() is None, first.communicate()[1][-2000:]
        # the command, twice: a fresh run, and a resume of the folder being written
        second = ["fit", "--dataset", "mnist1d", "--train-samples", "1000", "--epochs", "3",
                  "--checkpoint-every", "10", "--no-progress", "--out", str(out)]  # fmt: skip
        for extra in ([], ["--resume"]):
            r = subprocess.run([sys.executable, "-m", "onecycle", *second, *extra],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 2 and len(lines) == 1, (extra, r.stderr[-3000:])
            assert f"out='{out}'" in lines[0] and f"pid {first.pid}" in lines[0], lines
            assert "Traceback" not in r.stderr
        assert first.poll() is None  # the first run was left alone
    finally:
        (tmp_path / "go").write_text("")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["factory"] and metrics["final"]["optimizer_steps"] == 24
    found = ck.checkpoints(out / "checkpoints")  # the first run's only: none interleaved
    assert found[0].name == "ckpt-e0003-s00000024.pt" and len(found) == 3
    assert all(ck.load(p)["config"]["factory"] for p in found)
    assert (out / LOCK_FILE).read_text() == ""  # released: nothing names a holder


HOLDER = """
import sys, time
from onecycle.lock import FolderLock
FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_live_holder_refuses_and_a_killed_ones_lock_is_taken_over_with_a_warning(
    tmp_path, caplog
):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse, match=rf"out='{folder}'.*pid {holder.pid}"):
            FolderLock(folder).acquire()
        learn = _learner()  # the Python API: a Checkpoint's folder is locked the same way
        before = [p.clone() for p in learn.model.parameters()]
        with pytest.raises(FolderInUse, match=rf"folder='{folder}'.*pid {holder.pid}"):
            learn.fit_one_cycle(1, 0.1, cbs=[Checkpoint(folder)])
        assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
        assert learn.recorder.losses == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with caplog.at_level(logging.WARNING, logger="onecycle"):
        lock = FolderLock(folder).acquire()
    try:
        warned = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
        assert len(warned) == 1 and f"pid {holder.pid}" in warned[0], caplog.text
        assert "killed" in warned[0]
        assert lock.holder()["pid"] == os.getpid()
    finally:
        lock.release()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onecycle"), FolderLock(folder):
        pass  # released cleanly: the next one takes it without a word
    assert "taking over" not in caplog.text


def test_under_torchrun_only_rank_0_locks_and_its_refusal_is_every_ranks(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setattr(D, "is_distributed", lambda: True)
    monkeypatch.setattr(D, "is_main", lambda: False)  # rank 1
    monkeypatch.setattr(D, "broadcast_object", lambda obj, src=0: None)  # rank 0: locked
    with FolderLock(folder):
        assert not (folder / LOCK_FILE).exists()  # rank 1 holds nothing
        with FolderLock(folder):  # nor would it stop its own rank 0's lock (a real file)
            pass
    refusal = ("out", str(folder), "a folder no other process is writing: pid 7 holds …")
    monkeypatch.setattr(D, "broadcast_object", lambda obj, src=0: refusal)
    with pytest.raises(ConfigError, match="pid 7"):  # rank 0 was refused: so is rank 1
        FolderLock(folder).acquire()


# --- 6. a fresh run into a folder that holds another run's checkpoints ---------------------------


def test_a_fresh_run_into_another_runs_folder_is_refused_unless_resume_or_overwrite(
    tmp_path, caplog
):
    out = str(tmp_path / "fit")  # the default runs/fit after any earlier run
    assert _cli(*FIT, "--epochs", "3", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in Path(out, "checkpoints").iterdir()}
    metrics = Path(out, "metrics.json").read_text()
    rc, lines, stdout = _cli(*FIT, "--epochs", "2", "--out", out)
    assert rc == 2 and len(lines) == 1, lines
    assert f"out='{out}'" in lines[0] and "--resume" in lines[0] and "--overwrite" in lines[0]
    assert "train_loss" not in stdout  # refused before any training
    assert {p.name: p.read_bytes() for p in Path(out, "checkpoints").iterdir()} == before
    assert Path(out, "metrics.json").read_text() == metrics
    with caplog.at_level(logging.INFO, logger="onecycle"):
        rc, lines, _ = _cli(*FIT, "--epochs", "2", "--out", out, "--overwrite")
    assert rc == 0, lines
    assert "overwrite: cleared the earlier run" in caplog.text and "3 checkpoints" in caplog.text
    assert all(ck.load(p)["plan"]["n_epoch"] == 2 for p in ck.checkpoints(Path(out, "checkpoints")))
    assert json.loads(Path(out, "metrics.json").read_text())["config"]["epochs"] == 2
    # the failure: this resume picked the 3-epoch run's ckpt-e0003 and exited 2
    rc, lines, _ = _cli(*FIT, "--epochs", "2", "--out", out, "--resume")
    assert rc == 0, lines
    rc, lines, _ = _cli(*FIT, "--epochs", "2", "--out", out, "--resume", "--overwrite")
    assert rc == 2 and "overwrite" in lines[0], lines


def test_the_checkpoint_callback_refuses_another_runs_folder_the_same_way(tmp_path, caplog):
    folder = tmp_path / "ck"
    _learner().fit_one_cycle(2, 0.1, cbs=[Checkpoint(folder)])
    theirs = ck.checkpoints(folder)
    learn = _learner()
    with pytest.raises(ConfigError, match=rf"folder='{folder}'.*overwrite=True"):
        learn.fit_one_cycle(1, 0.1, cbs=[Checkpoint(folder)])
    assert learn.recorder.losses == [] and ck.checkpoints(folder) == theirs
    learn.fit_one_cycle(2, 0.1, cbs=[Checkpoint(folder)], resume="auto")  # continue: allowed
    with caplog.at_level(logging.INFO, logger="onecycle"):
        _learner().fit_one_cycle(1, 0.1, cbs=[Checkpoint(folder, overwrite=True)])
    assert "removed" in caplog.text
    assert all(ck.load(p)["plan"]["n_epoch"] == 1 for p in ck.checkpoints(folder))
    cb = Checkpoint(folder, overwrite=True)  # one callback over two fits (fine_tune): its own
    learn = _learner()
    learn.fit_one_cycle(1, 0.1, cbs=[cb])
    learn.fit_one_cycle(1, 0.1, cbs=[cb])
    with pytest.raises(ConfigError, match="overwrite"):
        Checkpoint(folder, overwrite="yes")


@pytest.mark.slow
def test_make_demo_twice_into_one_folder(tmp_path):
    out = str(tmp_path / "demo")
    for _ in range(2):  # `make demo` twice in a row: the demo redoes itself (--overwrite)
        rc, lines, stdout = _cli("demo", "--epochs", "1", "--no-progress", "--out", out)
        assert rc == 0, lines
        assert "test accuracy" in stdout
    assert all(ck.load(p)["plan"]["n_epoch"] == 1 for p in ck.checkpoints(Path(out, "checkpoints")))


# --- 7. disk full while writing a checkpoint -----------------------------------------------------


def _check_stopped_cleanly(out: Path, lines: list[str], rc: int) -> None:
    folder = out / "checkpoints"
    assert rc == 1 and len(lines) == 1, lines
    assert "No space left on device" in lines[0] and str(folder) in lines[0], lines
    assert "resume" in lines[0]
    leftovers = [p.name for p in folder.iterdir() if ".tmp" in p.name]
    assert not leftovers, leftovers  # nothing half-written
    for p in ck.checkpoints(folder):  # every checkpoint a resume could pick loads and verifies
        ck.load(p)
    assert not (out / "metrics.json").exists()


def test_disk_full_at_the_write_half_writes_nothing_a_resume_could_pick(tmp_path, monkeypatch):
    args = [*FIT, "--epochs", "3", "--checkpoint-every", "3"]
    assert _cli(*args, "--out", str(tmp_path / "ref"))[0] == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())["final"]
    real_open, calls = open, {"n": 0}

    class Full(io.FileIO):  # writes half of the third checkpoint, then the disk is full
        def write(self, b):
            calls["n"] += 1
            if calls["n"] == 5:  # data, manifest, data, manifest, then the third data write
                super().write(bytes(b)[: len(b) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    def fake_open(file, mode="r", *a, **kw):
        return Full(file, "wb") if mode == "wb" else real_open(file, mode, *a, **kw)

    monkeypatch.setattr(ck_files, "open", fake_open, raising=False)  # where files are written
    out = tmp_path / "run"
    rc, lines, _ = _cli(*args, "--out", str(out))
    monkeypatch.undo()
    _check_stopped_cleanly(out, lines, rc)
    assert calls["n"] == 5 and len(ck.checkpoints(out / "checkpoints")) == 2
    assert _cli(*args, "--out", str(out), "--resume")[0] == 0
    got = json.loads((out / "metrics.json").read_text())["final"]
    assert got["weights_sha256"] == ref["weights_sha256"]


def test_disk_full_at_the_end_of_a_run_is_one_line_and_resume_finishes_it(tmp_path, monkeypatch):
    args = [*FIT, "--epochs", "2"]
    real = Path.write_text

    def write_text(self, data, *a, **kw):  # the checkpoints fitted; metrics.json does not
        if self.name == "metrics.json.tmp":
            real(self, data[: len(data) // 2], *a, **kw)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *a, **kw)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "run"
    rc, lines, _ = _cli(*args, "--out", str(out))  # was: a raw OSError traceback
    monkeypatch.undo()
    assert rc == 1 and len(lines) == 1, lines
    assert "No space left on device" in lines[0] and str(out / "metrics.json") in lines[0]
    assert not list(out.glob("*.tmp")) and not (out / "metrics.json").exists()
    rc, lines, _ = _cli(*args, "--out", str(out), "--resume")  # space freed: the same command
    assert rc == 0, lines
    assert json.loads((out / "metrics.json").read_text())["final"]["optimizer_steps"] == 8


def _mount_tmpfs(where: Path, size: str) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:  # not root, or a container without CAP_SYS_ADMIN: cannot mount
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs: Linux only")
def test_disk_full_for_real_on_a_small_tmpfs(tmp_path):
    args = [*FIT, "--epochs", "3", "--checkpoint-every", "3", "--keep", "10"]
    assert _cli(*args, "--out", str(tmp_path / "ref"))[0] == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())["final"]
    size = (tmp_path / "ref" / "checkpoints" / "ckpt-e0003-s00000012.pt").stat().st_size
    small = tmp_path / "small"
    small.mkdir()
    _mount_tmpfs(small, f"{size * 5 // 2 // 1024}k")  # room for two checkpoints, not three
    try:
        out = small / "run"
        rc, lines, _ = _cli(*args, "--out", str(out))
        _check_stopped_cleanly(out, lines, rc)
        assert len(ck.checkpoints(out / "checkpoints")) == 2
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space freed
        rc, lines, _ = _cli(*args, "--out", str(out), "--resume")
        assert rc == 0, lines
        got = json.loads((out / "metrics.json").read_text())["final"]
        assert got["weights_sha256"] == ref["weights_sha256"]
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
