"""Nothing silently wrong: each defect a new user reported, reproduced, and the fault cases
(disk full, read-only output, signals, corrupt data). See docs/reliability.md."""

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onecycle
from onecycle import (
    Checkpoint,
    ConfigError,
    Learner,
    NonFiniteLossError,
    ScheduleLR,
    Scheduler,
    Step,
    TrainingInterrupted,
    accuracy,
)
from onecycle import checkpoint as ck
from onecycle import schedules as S
from onecycle.cli import main
from onecycle.data import DataError, Loader, find_fashion_mnist, load_fashion_mnist
from onecycle.data import datasets as ds
from onecycle.range_test import range_test
from onecycle.run import FitConfig, run_fit, weights_sha256
from onecycle.suggest import suggest


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _learner(**kw):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    kw.setdefault("valid_data", Loader(x, y, 128, shuffle=False))
    return Learner(model, Loader(x, y, 32), kw.pop("valid_data"), loss_func=F.cross_entropy, **kw)


def _cli(*argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(list(argv))
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    return rc, lines, out.getvalue()


FIT = ("fit", "--dataset", "mnist1d", "--train-samples", "400", "--epochs", "2", "--no-progress")


# --- 1. an explicit resume path that does not exist --------------------------------------------


def test_resume_from_a_missing_file_is_an_error_not_a_fresh_run(tmp_path):
    learn = _learner()
    with pytest.raises(ConfigError, match=r"resume='typo.pt'.*existing checkpoint"):
        learn.fit_one_cycle(1, 0.1, resume="typo.pt")
    assert learn.recorder.losses == []  # nothing trained
    rc, lines, _ = _cli(*FIT, "--out", str(tmp_path / "run"), "--resume-from", "/nonexistent.pt")
    assert rc == 2 and len(lines) == 1 and "/nonexistent.pt" in lines[0], lines
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_resume_auto_and_an_empty_folder_still_start_fresh(tmp_path):
    learn = _learner()
    learn.fit_one_cycle(1, 0.1, cbs=[Checkpoint(tmp_path / "ck")], resume="auto")
    (tmp_path / "empty").mkdir()
    learn2 = _learner()
    learn2.fit_one_cycle(1, 0.1, resume=tmp_path / "empty")
    assert len(learn2.recorder.losses) == 8


# --- 2. torchrun: the same command, the same run ------------------------------------------------


def test_the_recipe_batch_is_global_and_an_explicit_bs_per_process(monkeypatch):
    from onecycle import distributed as D

    assert FitConfig(dataset="mnist1d").resolved().bs == 100
    monkeypatch.setattr(D, "world_size", lambda: 2)
    c = FitConfig(dataset="mnist1d").resolved()
    assert (c.bs, c.global_bs) == (50, 100)  # the recipe's 100, split over 2 processes
    c = FitConfig(dataset="mnist1d", bs=64).resolved()
    assert (c.bs, c.global_bs) == (64, None)  # the user's --bs: per process


@pytest.mark.slow
def test_cli_under_torchrun_matches_one_process(tmp_path):
    # cnn1d has no batch norm, which on a CPU normalises per process (see the next test)
    args = ["fit", "--dataset", "mnist1d", "--model", "cnn1d", "--epochs", "2",
            "--train-samples", "1000", "--no-progress"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "onecycle", *args, "--out", str(tmp_path / "a")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "onecycle", *args, "--out", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert b["batch"] == {"per_process": 50, "processes": 2, "accumulate": 1, "global": 100,
                          "source": "recipe (global, split across processes)"}  # fmt: skip
    assert a["batch"]["global"] == 100 and a["batch"]["processes"] == 1
    # the same samples in every optimizer step: the same run up to float summation order
    assert a["final"]["optimizer_steps"] == b["final"]["optimizer_steps"] == 20
    la = [r["train_loss"] for r in a["epochs"]]
    lb = [r["train_loss"] for r in b["epochs"]]
    assert lb == pytest.approx(la, rel=1e-3)
    assert abs(a["final"]["test_accuracy"] - b["final"]["test_accuracy"]) <= 0.01
    assert "50 per process x 2 processes = 100" in two.stderr


# --- 3. accepted without a word ----------------------------------------------------------------


def test_values_that_were_silently_accepted_are_refused():
    with pytest.raises(ConfigError, match="three_phase"):
        S.one_cycle(0.1, three_phase="no")
    with pytest.raises(ConfigError, match="three_phase"):
        S.one_cycle_moms(three_phase="no")
    with pytest.raises(ConfigError, match=r"div=0.5.*>= 1"):
        S.one_cycle(0.1, div=0.5)
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match=r"schedules\['lr'\].*>= 0"):
        Scheduler(opt, {"lr": S.const(-0.1)}, 10)
    with pytest.raises(ConfigError, match=r"schedules\['momentum'\].*\[0, 1\]"):
        Scheduler(opt, {"lr": S.const(0.1), "momentum": S.const(1.5)}, 10)
    with pytest.raises(ConfigError, match="momentum"):  # a schedule that leaves [0, 1] later
        Scheduler(opt, {"lr": S.const(0.1), "momentum": S.Lin(0.9, 1.2)}, 10)
    with pytest.raises(ConfigError, match="div"):
        FitConfig(div=0.5).resolved()
    with pytest.raises(ConfigError, match="three_phase"):
        FitConfig(three_phase="no").resolved()  # type: ignore[arg-type]


def test_a_reversed_slice_is_refused():
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))

    def two_groups(m):
        return [list(m[0].parameters()), list(m[1].parameters())]

    learn = Learner(model, Loader(x, y, 32), loss_func=F.cross_entropy, splitter=two_groups)
    with pytest.raises(ConfigError, match="lo <= hi"):
        learn.fit_one_cycle(1, slice(0.1, 0.01))
    assert learn.group_values(slice(0.01, 0.1)) == pytest.approx([0.01, 0.1])


def test_range_test_metric_needs_validation_batches():
    x, y = _data()
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"metric.*valid_batches"):
        range_test(model, opt, F.cross_entropy, Loader(x, y, 32), metric=accuracy)
    with pytest.raises(ConfigError, match=r"metric.*valid_batches"):
        _learner().lr_find(metric=accuracy)


def test_a_bare_metric_function_is_one_metric_and_a_non_callable_is_refused():
    learn = _learner(metrics=accuracy)
    learn.fit_one_cycle(1, 0.1)
    assert "accuracy" in learn.recorder.rows[-1]
    with pytest.raises(ConfigError, match="metrics"):
        _learner(metrics=[1])
    with pytest.raises(ConfigError, match="metrics"):
        _learner(metrics="accuracy")


# --- 4, 5. range test: a foreign optimizer; a Step with a metric --------------------------------


def test_range_test_refuses_an_optimizer_over_other_parameters():
    x, y = _data()
    model = nn.Linear(4, 2)
    other = torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"optimizer.*none of them"):
        range_test(model, other, F.cross_entropy, Loader(x, y, 32))


def test_range_test_step_with_a_metric_is_a_clear_error_not_a_key_error():
    x, y = _data()
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [{"x": x[i : i + 32], "y": y[i : i + 32]} for i in range(0, 256, 32)]
    step = Step(lambda m, b: F.cross_entropy(m(b["x"]), b["y"]))
    with pytest.raises(ConfigError, match=r"metric.*Step"):
        range_test(model, opt, step, batches, valid_batches=batches, metric=accuracy)
    res = range_test(model, opt, step, batches, valid_batches=batches, num_it=10)
    assert len(res.valid_losses) == len(res.lrs)  # the validation loss alone works


# --- 6, 7. the device; a file that is not a checkpoint ------------------------------------------


def test_cli_unknown_or_missing_device_is_one_line_exit_2(tmp_path):
    rc, lines, _ = _cli(*FIT, "--out", str(tmp_path), "--device", "banana")
    assert rc == 2 and len(lines) == 1 and "device='banana'" in lines[0], lines
    cuda = "cuda:999" if torch.cuda.is_available() else "cuda"
    rc, lines, _ = _cli(*FIT, "--out", str(tmp_path), "--device", cuda)
    assert rc == 2 and len(lines) == 1 and "device=" in lines[0], lines
    with pytest.raises(ConfigError, match="device"):
        _learner(device="banana")


def test_resume_from_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    rc, lines, _ = _cli(*FIT, "--out", str(tmp_path / "run"), "--resume-from", str(path))
    assert rc == 2 and len(lines) == 1, lines
    assert "not a onecycle checkpoint" in lines[0] and "ckpt-e" in lines[0]


# --- 8. messages that were wrong -----------------------------------------------------------------


def test_too_flat_then_diverged_does_not_advise_a_higher_end_lr():
    lrs = list(np.geomspace(1e-6, 10, 60))
    losses = [2.3] * 50 + [2.3 * 1.5**k for k in range(1, 11)]
    res = suggest(lrs, losses, "diverged at lr=3 (smoothed loss > 4x best)")
    assert res.recommended is None
    why = res.suggestions["valley"].reason
    assert "too flat" in why and "raise end_lr" not in why and "diverged" in why
    flat = suggest(lrs, [2.3] * 60, "completed 60 steps")
    assert "raise end_lr" in flat.suggestions["valley"].reason
    assert "0.5%" in flat.suggestions["valley"].reason


def test_a_nan_at_the_first_step_does_not_name_step_minus_one():
    learn = _learner(valid_data=None)
    learn.loss_func = lambda pred, y: F.cross_entropy(pred, y) * float("nan")
    with pytest.raises(NonFiniteLossError, match="optimizer step 0") as e:
        learn.fit(1, 0.1)
    assert "step -1" not in str(e.value) and "initial" in str(e.value)


def test_lr_max_autox_names_the_word_auto(tmp_path):
    with pytest.raises(ConfigError, match="'auto'"):
        _learner().fit_one_cycle(1, "autox")
    with pytest.raises(ConfigError, match=r"lr_max='autox'.*'auto'"):
        run_fit(FitConfig(lr_max="autox", out=None))  # type: ignore[arg-type]
    rc, lines, _ = _cli(*FIT, "--out", str(tmp_path), "--lr-max", "autox")
    assert rc == 2 and len(lines) == 1 and "'auto'" in lines[0]


# --- 9. onecycle.range_test is the function ------------------------------------------------------


def test_range_test_is_reachable_from_the_package():
    from onecycle.range_test import range_test as from_module

    assert onecycle.range_test is from_module and callable(onecycle.range_test)
    x, y = _data()
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = onecycle.range_test(model, opt, F.cross_entropy, Loader(x, y, 32), num_it=20)
    assert isinstance(res, onecycle.RangeTestResult) and len(res.lrs) > 5


# --- 11. ScheduleLR past its end; DDP and destroy_process_group ----------------------------------


def test_schedule_lr_logs_once_when_stepped_past_the_end(caplog):
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    sched = ScheduleLR(opt, {"lr": S.one_cycle(0.1)}, total_steps=4)
    with caplog.at_level(logging.INFO, logger="onecycle.scheduler"):
        for _ in range(4):
            opt.step()
            sched.step()
        assert not [r for r in caplog.records if "past total_steps" in r.message]
        for _ in range(3):
            opt.step()
            sched.step()
    past = [r for r in caplog.records if "past total_steps=4" in r.message]
    assert len(past) == 1 and past[0].levelno == logging.INFO
    assert sched.get_last_lr()[0] == pytest.approx(0.1 / 1e5)  # held at the end


DDP_SCRIPT = """
import os, sys, torch, torch.distributed as dist, torch.nn.functional as F
from onecycle import Learner
from onecycle.data import Loader
dist.init_process_group("gloo")
torch.manual_seed(0)
x = torch.randn(256, 4); y = (x[:, 0] > 0).long()
learn = Learner(torch.nn.Linear(4, 2), Loader(x, y, 16), loss_func=F.cross_entropy)
learn.fit_one_cycle(2, 0.1)
assert learn.ddp_model is None  # released after the fit
dist.destroy_process_group()  # while the Learner is alive: must exit cleanly
rank = os.environ["RANK"]
open(os.path.join(sys.argv[1], "rank" + rank), "w").write(str(dist.is_initialized()))
"""


@pytest.mark.slow
def test_destroy_process_group_while_a_learner_lives_exits_cleanly(tmp_path):
    script = tmp_path / "user.py"
    script.write_text(DDP_SCRIPT)
    for _ in range(3):  # it aborted in 1 of 2 runs
        for f in tmp_path.glob("rank*"):
            f.unlink()
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", str(script), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
        # each rank got past destroy_process_group (files: printed lines interleave)
        assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == ["False", "False"]


# --- 12. disk full while writing a checkpoint ----------------------------------------------------


def test_disk_full_during_a_checkpoint_stops_cleanly_and_resume_continues(tmp_path, monkeypatch):
    args = [*FIT, "--epochs", "3", "--checkpoint-every", "3"]
    rc, _, _ = _cli(*args, "--out", str(tmp_path / "ref"))
    assert rc == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())["final"]

    real_fsync, calls = os.fsync, {"n": 0}

    def full(fd):  # the third checkpoint's data write (4 fsyncs per checkpoint) finds it full
        calls["n"] += 1
        if calls["n"] == 9:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "run"
    rc, lines, _ = _cli(*args, "--out", str(out))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert rc == 1 and len(lines) == 1, lines
    assert "No space left on device" in lines[0] and "resume" in lines[0]
    folder = out / "checkpoints"
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]  # no half-written file
    _, state = ck.latest(folder)  # the previous checkpoint is intact and verifies
    assert state["position"]["step"] > 0
    assert not (out / "metrics.json").exists()
    rc, _, _ = _cli(*args, "--out", str(out), "--resume")
    assert rc == 0
    got = json.loads((out / "metrics.json").read_text())["final"]
    assert got["weights_sha256"] == ref["weights_sha256"]


# --- 13. an output folder that cannot be written -------------------------------------------------


@pytest.mark.parametrize("where", ["under-a-file", "sysfs"])
def test_an_unwritable_out_is_refused_before_training(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = str(tmp_path / "file" / "run")
    else:
        out = "/sys/onecycle-test-out"
        if not Path("/sys").is_dir():
            pytest.skip("no /sys on this platform")
    for argv in ([*FIT, "--out", out], ["lr-find", "--dataset", "mnist1d", "--out", out],
                 ["schedule", "--out", out],
                 ["study", "--quick", "--train-samples", "200", "--out", out]):  # fmt: skip
        rc, lines, stdout = _cli(*argv)
        assert rc == 2 and len(lines) == 1 and "out=" in lines[0], (argv, lines)
        assert "can write" in lines[0]
        assert "train_loss" not in stdout  # refused before any training


# --- 14. signals during the range test and during validation -------------------------------------


def test_an_interrupt_in_the_range_test_restores_the_model():
    learn = _learner()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    calls = {"n": 0}

    def loss(pred, y):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt  # what SIGINT raises
        return F.cross_entropy(pred, y)

    learn.loss_func = loss
    with pytest.raises(KeyboardInterrupt):
        learn.lr_find(num_it=50)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler: the CLI's ``main`` is
    running (a signal during the imports before it would get Python's traceback). Linux
    only; elsewhere the fixed wait alone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    mask = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def _signal_cli(argv, sig, out, wait_for):
    # SIGINT as a terminal's: a suite started in the background (`cmd &`) has it ignored,
    # and a child inherits that
    def sigint_default() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "onecycle", *argv, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)  # fmt: skip
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and proc.poll() is None
        and not (wait_for() and _catches_sigterm(proc.pid))
    ):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, [ln for ln in err.splitlines() if ln.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_lr_find_interrupted_exits_128_plus_signal_with_one_line(tmp_path, sig):
    # a sweep that never diverges and would run for minutes; signalled once it has started
    argv = ["lr-find", "--dataset", "mnist1d", "--start-lr", "1e-9", "--end-lr", "1e-8",
            "--num-it", "1000000"]  # fmt: skip
    t0 = time.monotonic()
    rc, lines = _signal_cli(argv, sig, tmp_path, lambda: time.monotonic() - t0 > 6)
    assert rc == 128 + sig, lines
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0], lines
    assert not (tmp_path / "lr_find.json").exists()


def test_sigint_during_validation_checkpoints_a_consistent_state(tmp_path):
    ref = _learner()
    ref.fit_one_cycle(3, 0.1)
    sent = {"done": False}

    def metric(pred, y):  # runs inside validation: the signal lands mid-validation
        if not sent["done"]:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)
        return accuracy(pred, y)

    learn = _learner(metrics=[metric])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as e:
        learn.fit_one_cycle(3, 0.1, cbs=[Checkpoint(tmp_path)])
    assert e.value.epoch == 0 and e.value.path is not None
    state = ck.load(e.value.path)
    assert state["position"]["epoch"] == 1 and state["position"]["batches_done"] == 0
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is restored
    again = _learner()
    again.fit_one_cycle(3, 0.1, cbs=[Checkpoint(tmp_path)], resume="auto")
    assert weights_sha256(again.model) == weights_sha256(ref.model)


# --- 15. data corrupted between runs ------------------------------------------------------------


def test_a_corrupted_fashion_mnist_file_is_refused(tmp_path, in_ci):
    src = find_fashion_mnist()
    if src is None:
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI (.ci/run)")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    for f in Path(src).iterdir():
        if "labels" in f.name or "t10k-images" in f.name or "train-images" in f.name:
            shutil.copy(f, tmp_path / f.name)
    load_fashion_mnist(tmp_path)  # the good copy loads
    victim = next(tmp_path.glob("t10k-labels*"))
    data = bytearray(ds._read_bytes(victim))
    flipped = tmp_path / "t10k-labels-idx1-ubyte"  # uncompressed beats nothing: same stem
    victim.unlink()
    data[-1] ^= 1  # same length, one label changed
    flipped.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_fashion_mnist(tmp_path)
    flipped.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist(tmp_path)
    rc, lines, _ = _cli("fit", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path),
                        "--out", str(tmp_path / "run"))  # fmt: skip
    assert rc == 2 and len(lines) == 1 and "truncated" in lines[0]


def test_a_corrupted_mnist1d_cache_is_not_trusted(tmp_path, monkeypatch, caplog):
    pytest.importorskip("mnist1d")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    good = ds.load_mnist1d(7)
    cache = tmp_path / "onecycle" / "mnist1d-seed7.npz"
    assert cache.is_file()
    with np.load(cache) as z:  # a cache rewritten with other values but its old checksum
        arrays = {k: z[k] for k in z.files}
    arrays["y"] = (arrays["y"] + 1) % 10
    np.savez(cache, **arrays)
    with caplog.at_level(logging.WARNING):
        again = ds.load_mnist1d(7)
    assert torch.equal(again.y_train, good.y_train)
    assert "SHA-256" in caplog.text
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = ds.load_mnist1d(7)
    assert torch.equal(third.x_train, good.x_train) and "generating it again" in caplog.text


# --- 16. issue 31: a seed over 64 bits, a resume that changed its batch, labels out of range ----


def test_a_seed_over_64_bits_is_refused_like_a_negative_one(tmp_path):
    for seed in ("1180591620717411303424", "-1"):
        for argv in ([*FIT, "--seed", seed], ["lr-find", "--dataset", "mnist1d", "--seed", seed]):
            rc, lines, stdout = _cli(*argv, "--out", str(tmp_path / "run"))
            assert rc == 2 and len(lines) == 1 and f"seed={seed}" in lines[0], (argv, lines)
            assert "[0, 18446744073709551615]" in lines[0] and "train_loss" not in stdout
    with pytest.raises(ConfigError, match=r"seed=1180591620717411303424 is invalid"):
        FitConfig(seed=2**70).resolved()  # the Python API: the same
    assert FitConfig(seed=2**64 - 1).resolved().seed == 2**64 - 1  # torch.manual_seed's largest


def test_a_resume_that_changed_the_batch_says_so_and_offers_extend_only_for_a_longer_run(
    tmp_path,
):
    out = str(tmp_path / "run")
    assert _cli(*FIT, "--out", out)[0] == 0  # batch 100: 4 steps per epoch
    rc, lines, _ = _cli(*FIT, "--bs", "50", "--resume", "--out", out)
    assert rc == 2 and len(lines) == 1, lines
    assert "batch size changed (100 -> 50)" in lines[0] and "extend" not in lines[0], lines
    rc, lines, _ = _cli(*FIT, "--accumulate", "2", "--resume", "--out", out)
    assert rc == 2 and "accumulation changed (1 -> 2" in lines[0] and "extend" not in lines[0]
    rc, lines, _ = _cli(*FIT, "--bs", "50", "--epochs", "3", "--resume", "--out", out)
    assert "batch size changed" in lines[0] and "epochs changed (2 -> 3)" in lines[0]
    assert "extend" not in lines[0]
    rc, lines, _ = _cli(*FIT, "--epochs", "3", "--resume", "--out", out)  # longer, same steps
    assert rc == 2 and "same steps per epoch" in lines[0] and "--extend" in lines[0], lines
    # the Python API: the steps per epoch, and the processes, named
    learn = _learner()
    learn.fit_one_cycle(2, 0.1, cbs=[Checkpoint(tmp_path / "ck")])
    x, y = _data()
    other = Learner(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)),
                    Loader(x, y, 64), loss_func=F.cross_entropy)  # fmt: skip
    with pytest.raises(ConfigError, match=r"steps per epoch changed \(8 -> 4") as e:
        other.fit_one_cycle(2, 0.1, resume=tmp_path / "ck")
    assert "extend" not in str(e.value)
    path, state = ck.latest(tmp_path / "ck")
    ck.save({**state, "world_size": 2}, path)
    with pytest.raises(ConfigError, match=r"processes changed \(2 -> 1\)"):
        other.fit_one_cycle(2, 0.1, resume=tmp_path / "ck")


def _labelled(y, bs=32, loss_func=F.cross_entropy, valid=None):
    torch.manual_seed(0)
    x, _ = _data()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))  # 2 classes out
    train = Loader(x, y, bs, shuffle=False)
    valid = None if valid is None else Loader(x, valid, 128, shuffle=False)
    return Learner(model, train, valid, loss_func=loss_func)


def test_labels_out_of_range_name_the_batch_and_the_check_before_the_first_step():
    learn = _labelled(torch.arange(256) % 5)  # labels 0..4 for a model of 2 classes
    before = [p.clone() for p in learn.model.parameters()]
    with pytest.raises(ConfigError) as e:
        learn.fit_one_cycle(1, 0.1)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("train_data='epoch 0, batch 0: labels up to 4'")
    assert "the model outputs 2 classes" in msg and "[0, 2)" in msg, msg
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    assert learn.recorder.losses == []  # no optimizer step was taken
    _, y = _data()
    y = y.clone()
    y[3 * 32 + 1] = 7  # one bad label in batch 3; with a loss onecycle does not know
    learn = _labelled(y, loss_func=lambda pred, target: F.cross_entropy(pred, target))
    with pytest.raises(ConfigError, match=r"train_data='epoch 0, batch 3: labels up to 7'"):
        learn.fit_one_cycle(1, 0.1)
    assert len(learn.recorder.losses) == 3
    y[3 * 32 + 1] = 255  # cross-entropy's ignore_index is respected
    _labelled(y, loss_func=nn.CrossEntropyLoss(ignore_index=255)).fit_one_cycle(1, 0.1)
    good = _data()[1]
    with pytest.raises(ConfigError, match=r"valid_data='batch 0: labels up to 9'"):
        _labelled(good, valid=(torch.arange(256) % 10)).fit_one_cycle(1, 0.1)


def test_a_slice_on_one_param_group_warns_once_and_trains_at_its_high_end(caplog):
    learn = _learner()
    with caplog.at_level(logging.WARNING, logger="onecycle"):
        learn.fit_one_cycle(1, slice(1e-3, 1e-1))
        learn.fit_one_cycle(1, slice(1e-3, 1e-1))
    warned = [r.getMessage() for r in caplog.records if "low end" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("lr_max=slice(0.001, 0.1, None)"), warned
    assert "one param group" in warned[0] and "0.1" in warned[0]
    plain = _learner()
    plain.fit_one_cycle(1, 0.1)
    assert learn.recorder.lrs[-8:] == plain.recorder.lrs  # the high end, as lr_max=0.1
    caplog.clear()
    two = _learner(splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())])
    with caplog.at_level(logging.WARNING, logger="onecycle"):
        two.fit_one_cycle(1, slice(1e-3, 1e-1))  # two groups: the slice spreads over them
        _learner().fit_one_cycle(1, slice(1e-1))  # no low end: nothing to warn of
    assert "low end" not in caplog.text
