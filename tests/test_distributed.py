"""Training, range test and resume under torch.distributed: 2 CPU processes, gloo.

Each test spawns a real 2-process group (``onecycle.distributed.spawn``: free port, group
torn down afterwards) running a function of ``tests/ddp_workers.py``, then compares what
the ranks saw with each other and with one process doing the same work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ddp_workers as W
import pytest
import torch

from onecycle import distributed as D
from onecycle.checkpoint import CheckpointError

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no distributed")

B = 32  # the 1-process batch; each of the 2 ranks takes B/2


def _spawn(fn, *args) -> None:
    D.spawn(fn, 2, args, timeout=120, device="cpu")  # gloo, also where there is a GPU


def _ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_ranks_with_half_batches_match_one_process(tmp_path) -> None:
    _spawn(W.train, str(tmp_path), B // 2, 3)
    r0, r1 = _ranks(tmp_path)
    single = W.learner(B)
    single.fit_one_cycle(3, lr_max=0.5)
    # the same number of steps per rank as one process (256 / 2 / 16 = 256 / 32 = 8)
    assert r0["n_iter"] == r1["n_iter"] == single.n_iter == 8
    # identical on both ranks: DDP keeps the replicas equal, bit for bit
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
    # and equal to one process with the whole batch, up to float summation order
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["weights"][k], v, rtol=1e-5, atol=1e-6)
    # the schedule: the same LR / momentum at every step, on both ranks and in 1 process
    assert r0["hypers"] == r1["hypers"]
    assert r0["hypers"]["lr"] == single.recorder.hypers["lr"]
    assert r0["hypers"]["momentum"] == single.recorder.hypers["momentum"]
    assert len(r0["hypers"]["lr"]) == 3 * 8
    # losses are averaged over ranks: both ranks record the global loss
    assert r0["losses"] == r1["losses"]
    assert r0["losses"] == pytest.approx(single.recorder.losses, rel=1e-4)
    # validation is sharded and reduced: the whole valid set's numbers, on every rank
    assert r0["valid"] == r1["valid"]
    assert r0["valid"]["accuracy"] == pytest.approx(single.validate()["accuracy"], abs=1e-9)
    assert r0["valid"]["valid_loss"] == pytest.approx(single.validate()["valid_loss"], rel=1e-5)


def test_range_test_agrees_across_ranks_and_restores(tmp_path) -> None:
    _spawn(W.lr_find, str(tmp_path), B // 2)
    r0, r1 = _ranks(tmp_path)
    assert r0["restored"] and r1["restored"]
    assert r0["result"] == r1["result"]  # same losses, same stop, same suggestions
    assert r0["result"]["recommended"] is not None


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path) -> None:
    full, crash, resumed = tmp_path / "full", tmp_path / "crash", tmp_path / "resumed"
    for d in (full, crash, resumed):
        d.mkdir()
    _spawn(W.checkpointed, str(full), str(full / "ck"), B // 2, 3, None)
    _spawn(W.checkpointed, str(crash), str(tmp_path / "ck"), B // 2, 3, 11)  # mid-epoch 2
    assert [r["status"] for r in _ranks(crash)] == ["injected crash"] * 2
    ckpts = sorted(p.name for p in (tmp_path / "ck").glob("*.pt"))
    assert ckpts[-1] == "ckpt-e0001-s00000009.pt"  # written by rank 0 only, every 3 steps
    _spawn(W.checkpointed, str(resumed), str(tmp_path / "ck"), B // 2, 3, None)
    a, b = _ranks(full), _ranks(resumed)
    for r in range(2):
        assert b[r]["status"] == "done"
        for k in a[r]["weights"]:
            assert torch.equal(a[r]["weights"][k], b[r]["weights"][k]), (r, k)
        assert a[r]["hypers"] == b[r]["hypers"]


def test_resume_with_another_world_size_fails_clearly(tmp_path) -> None:
    _spawn(W.checkpointed, str(tmp_path), str(tmp_path / "ck"), B // 2, 1, None)
    learn = W.learner(B)
    with pytest.raises(CheckpointError, match="2-process run, this run has 1"):
        learn.fit_one_cycle(1, lr_max=0.5, resume=tmp_path / "ck")


def test_nan_on_one_rank_stops_both(tmp_path) -> None:
    t0 = time.monotonic()
    _spawn(W.nan_on_rank1, str(tmp_path), B // 2)
    r0, r1 = _ranks(tmp_path)
    for r in (r0, r1):
        assert r["status"].startswith("NonFiniteLossError: non-finite loss"), r["status"]
        assert r["steps"] == 3  # stopped before the 4th step, the same on both
    assert time.monotonic() - t0 < 100  # no rank waited for the timeout


def test_a_dataloader_without_distributed_sampler_is_refused(tmp_path) -> None:
    _spawn(W.bad_loader, str(tmp_path))
    for r in _ranks(tmp_path):
        assert "DistributedSampler" in r["status"]


def test_init_times_out_instead_of_hanging(tmp_path) -> None:
    code = (
        "import os, onecycle.distributed as D\n"
        "try:\n    D.init()\nexcept Exception as e:\n    print('FAILED', type(e).__name__)\n"
    )
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(D.free_port()), "ONECYCLE_DIST_TIMEOUT": "3"}  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert "FAILED" in out.stdout, out.stderr[-2000:]
    assert time.monotonic() - t0 < 60


def test_bad_timeout_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setenv("ONECYCLE_DIST_TIMEOUT", "soon")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="ONECYCLE_DIST_TIMEOUT"):
        D.init()


@pytest.mark.parametrize("device", ["cpu", None])
def test_the_backend_follows_the_runs_device_where_a_gpu_is_present(monkeypatch, device) -> None:
    """On a 1-GPU machine, 2 processes training on the CPU join with gloo and leave the GPU
    alone; with the device left open, the second process is refused by name (before, both
    asked NCCL for GPU ``LOCAL_RANK`` and rank 1 died on "invalid device ordinal")."""
    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kw: calls.append(kw["backend"]))
    monkeypatch.setattr(D.dist, "get_rank", lambda: 1)
    for k, v in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    if device == "cpu":
        assert D.init(device="cpu") and calls == ["gloo"]
    else:
        with pytest.raises(D.ConfigError, match=r"LOCAL_RANK.*< 1, the GPUs here"):
            D.init()
        assert calls == []


@pytest.mark.parametrize("name", ["cuda:2", "cuda:257", "cuda:999"])
def test_a_cuda_index_beyond_the_gpus_is_refused_even_where_torch_wraps_it(monkeypatch, name):
    # torch.device keeps 8 bits: "cuda:257" is cuda:1 (a GPU that exists), "cuda:999" cuda:-25
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(D.ConfigError, match=f"device='{name}'.*a CUDA index < 2"):
        D.check_device("device", name)
    assert D.check_device("device", "cuda:1") == torch.device("cuda:1")


def test_single_process_helpers_are_no_ops() -> None:
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_main()
    t = torch.ones(2)
    assert D.all_reduce_sum(t) is t and D.broadcast_object({"a": 1}) == {"a": 1}
    assert D.all_gather_object(5) == [5]
    D.barrier()


def _torchrun(*args: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "onecycle", *args, "--out", str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_fit_under_torchrun(tmp_path) -> None:
    out = tmp_path / "run"
    p = _torchrun("fit", "--dataset", "mnist1d", "--epochs", "2", "--no-progress",
                  "--train-samples", "1000", out=out)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2
    # the recipe's batch (100) is global: 50 per rank, the steps of one process
    assert m["final"]["optimizer_steps"] == 2 * 10  # 1000 / (2 ranks x 50)
    assert p.stdout.count("train_loss") == 1  # only rank 0 prints the table
    assert m["final"]["test_accuracy"] > 0.2
    assert len(list((out / "checkpoints").glob("*.pt"))) == 2  # rank 0 wrote each epoch end
    # the recipe's model has batch norm: on a CPU it normalises per process, and says so
    assert "batch norm normalises each process's 50 samples, not the global batch of 100" in (
        p.stderr)  # fmt: skip


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_gone(pids: list[int], timeout: float = 60) -> None:
    """Until each of ``pids`` has exited (a zombie has: its files, and locks, are closed)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.05)


@pytest.mark.slow
def test_cli_torchrun_killed_and_resumed_matches_uninterrupted(tmp_path) -> None:
    """A 2-process CLI run killed (SIGKILL, the whole job) mid-epoch, resumed with
    --resume, ends with the same weights as an uninterrupted 2-process run."""
    args = ["fit", "--dataset", "mnist1d", "--epochs", "4", "--no-progress",
            "--checkpoint-every", "4"]  # fmt: skip
    ref = _torchrun(*args, out=tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "onecycle", *args, "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        done = list((out / "checkpoints").glob("*-s000000[1-9]*.pt.manifest"))
        if any(int(p.name.split("-s")[1][:8]) >= 12 for p in done):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    # torchrun starts each worker in a session of its own: the whole job is the agent's
    # group and each worker's (killing the agent alone left the workers training on, into
    # the folder the resume writes: the lock now refuses that resume, naming rank 0's pid)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    for group in (proc.pid, *workers):
        os.killpg(group, signal.SIGKILL)
    proc.wait()
    _wait_gone(workers)
    res = _torchrun(*args, "--resume", out=out)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())["final"]
    b = json.loads((out / "metrics.json").read_text())["final"]
    assert b["weights_sha256"] == a["weights_sha256"]
    assert b["optimizer_steps"] == a["optimizer_steps"] == 4 * 40  # 4000 / (2 x 50) per epoch


def test_a_time_budget_stops_every_rank_at_the_same_step(tmp_path) -> None:
    # rank 0's batches take 1 s, rank 1's 1.5 s (fake clocks): the ranks agree on the mean,
    # 1.25 s a step, so 20 s are 16 steps on both, and DDP's replicas stay equal
    _spawn(W.budgeted, str(tmp_path), B // 2, 20.0)
    r0, r1 = _ranks(tmp_path)
    assert r0["report"] == r1["report"] and r0["report"]["optimizer_steps"] == 16
    assert r0["report"]["ended_by"] == "budget" and r0["report"]["elapsed"] == 20.0
    assert (r0["now"], r1["now"]) == (16.0, 24.0)  # each rank's own clock
    assert r0["hypers"] == r1["hypers"] and r0["hypers"]["lr"][-1] == [0.5 / 1e5]
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
