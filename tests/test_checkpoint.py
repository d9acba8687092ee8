"""Never lose training: exact resume (a matrix of stop points), torn and corrupt files,
unsafe pickles, non-finite values, mismatched checkpoints, and kills of a real CLI run."""

import copy
import json
import os
import pathlib
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Callback, ConfigError, Learner, NonFiniteLossError, accuracy, adamw, sgd
from onecycle import checkpoint as ck
from onecycle.data import Loader


class Crash(Exception):
    pass


class CrashAt(Callback):
    order = 99  # after Checkpoint (97) has written this step

    def __init__(self, step):
        self.step = step

    def after_step(self, learn):
        if learn.scheduler.step_count == self.step:
            raise Crash(f"crash after step {self.step}")


def _setup(opt_func, seed=0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(256, 2),
    )
    train = Loader(x, y, 16, seed=5, crop_pad=1, hflip=True)  # shuffled and augmented
    return Learner(
        model,
        train,
        Loader(x, y, 48, shuffle=False),
        loss_func=F.cross_entropy,
        metrics=[accuracy],
        opt_func=opt_func,
        wd=1e-3,
    )


def _trace(learn):
    r = learn.recorder
    return r.losses, r.hypers, [{k: v for k, v in row.items() if k != "seconds"} for row in r.rows]


EPOCHS, STEPS_PER_EPOCH = 3, 6


@pytest.mark.parametrize("opt_func", [sgd, adamw], ids=["sgd", "adamw"])
@pytest.mark.parametrize("stop", [1, 4, STEPS_PER_EPOCH, STEPS_PER_EPOCH + 3, EPOCHS * 6 - 1,
                                  EPOCHS * 6], ids=lambda s: f"step{s}")  # fmt: skip
def test_resume_matrix_is_bit_exact(tmp_path, opt_func, stop):
    torch.manual_seed(123)
    ref = _setup(opt_func)
    ref.fit_one_cycle(EPOCHS, 0.05, cbs=[ck.Checkpoint(tmp_path / "ref", every=1)])

    torch.manual_seed(123)
    first = _setup(opt_func)
    with pytest.raises(Crash):
        first.fit_one_cycle(
            EPOCHS, 0.05, cbs=[ck.Checkpoint(tmp_path / "run", every=1), CrashAt(stop)]
        )
    # a fresh process would build everything anew: other init, other global RNG state
    torch.manual_seed(999)
    np.random.seed(1)
    random.seed(2)
    second = _setup(opt_func, seed=77)
    second.fit_one_cycle(
        EPOCHS, 0.05, cbs=[ck.Checkpoint(tmp_path / "run", every=1)], resume="auto"
    )
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    ref_opt, got_opt = ref.opt.state_dict(), second.opt.state_dict()
    for i, s in ref_opt["state"].items():
        for n, t in s.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(got_opt["state"][i][n])), (i, n)
    assert ref_opt["param_groups"] == got_opt["param_groups"]
    assert _trace(ref) == _trace(second)


class CrashAfterEpoch(Callback):
    order = 99  # after Checkpoint (97) has written the epoch-end checkpoint

    def after_epoch(self, learn):
        raise Crash(f"crash after epoch {learn.epoch}")


def test_resume_from_an_epoch_end_checkpoint_keeps_the_epoch_rows(tmp_path):
    ref = _setup(sgd)
    ref.fit_one_cycle(EPOCHS, 0.05)
    first = _setup(sgd)
    with pytest.raises(Crash):
        first.fit_one_cycle(EPOCHS, 0.05, cbs=[ck.Checkpoint(tmp_path), CrashAfterEpoch()])
    second = _setup(sgd, seed=77)
    second.fit_one_cycle(EPOCHS, 0.05, cbs=[ck.Checkpoint(tmp_path)], resume="auto")
    # the next epoch's train_loss averages its own batches only, not the previous epoch's
    assert _trace(ref) == _trace(second)


def test_resume_without_checkpoint_starts_fresh_and_says_so(tmp_path, caplog):
    learn = _setup(sgd)
    with caplog.at_level("INFO"):
        learn.fit_one_cycle(1, 0.05, cbs=[ck.Checkpoint(tmp_path)], resume="auto")
    assert any("starting fresh" in r.message for r in caplog.records)
    assert len(learn.recorder.lrs) == STEPS_PER_EPOCH


def test_resume_auto_needs_a_checkpoint_folder():
    with pytest.raises(ConfigError, match="resume"):
        _setup(sgd).fit_one_cycle(1, 0.05, resume="auto")


def _make_checkpoints(folder, n=3):
    learn = _setup(sgd)
    learn.fit_one_cycle(1, 0.05, cbs=[ck.Checkpoint(folder, every=2, keep=10)])
    return ck.checkpoints(folder)


def test_torn_corrupt_and_incomplete_files_fall_back_to_the_previous_one(tmp_path, caplog):
    files = _make_checkpoints(tmp_path)
    newest, second, third = files[0], files[1], files[2]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # torn
    with caplog.at_level("WARNING"):
        path, _state = ck.latest(tmp_path)
    assert path == second and "torn" in caplog.text and newest.name in caplog.text
    raw = bytearray(second.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    second.write_bytes(bytes(raw))
    third.with_name(third.name + ".manifest").unlink()  # write interrupted before the manifest
    path, _ = ck.latest(tmp_path)
    assert path == files[3]
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.load(second)
    with pytest.raises(ck.CheckpointError, match="incomplete"):
        ck.load(third)


def test_tmp_files_of_an_interrupted_write_are_ignored(tmp_path):
    files = _make_checkpoints(tmp_path)
    (tmp_path / f".{files[0].name}.tmp-12345").write_bytes(b"half a checkpoint")
    assert ck.latest(tmp_path)[0] == files[0]


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "ckpt-e0001-s00000001.pt"
    torch.save({"format": ck.FORMAT_VERSION, "model": {}, "x": Evil(sentinel)}, path)
    data = path.read_bytes()
    import hashlib

    manifest = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "format": 1}
    path.with_name(path.name + ".manifest").write_text(json.dumps(manifest))
    with pytest.raises(ck.CheckpointError, match="refused"):
        ck.load(path)
    assert ck.latest(tmp_path) is None
    assert not sentinel.exists()
    pickle.loads(pickle.dumps(0))  # (pickle itself still works: nothing was patched)


def test_no_code_path_loads_without_weights_only():
    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for py in [*root.glob("src/**/*.py"), *root.glob("benchmarks/*.py")]:
        text = py.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{py.relative_to(root)}:{i}")
    assert not offenders, offenders


def test_non_finite_loss_leaves_only_finite_checkpoints(tmp_path):
    calls = {"n": 0}

    def loss(pred, y):
        calls["n"] += 1
        out = F.cross_entropy(pred, y)
        return out * float("inf") if calls["n"] == 9 else out  # calls 7, 8: validation

    learn = _setup(sgd)
    learn.loss_func = loss
    with pytest.raises(NonFiniteLossError, match="optimizer step 6"):
        learn.fit_one_cycle(2, 0.05, cbs=[ck.Checkpoint(tmp_path, every=1)])
    _path, state = ck.latest(tmp_path)
    assert state["position"]["step"] == 6  # six good steps, the seventh never happened
    for k, v in learn.model.named_parameters():  # weights of the last good step (BN running
        assert torch.equal(v, state["model"][k])  # statistics saw the bad batch's forward)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    with pytest.raises(ck.CheckpointError, match="not finite"):
        bad = copy.deepcopy(state)
        bad["model"]["0.weight"][0, 0, 0, 0] = float("nan")
        ck.save(bad, tmp_path / "ckpt-e0009-s00000099.pt")


def test_resuming_a_different_schedule_or_model_is_refused(tmp_path):
    _make_checkpoints(tmp_path)
    with pytest.raises(ConfigError, match="resume"):
        _setup(sgd).fit_one_cycle(1, 0.07, cbs=[ck.Checkpoint(tmp_path)], resume="auto")
    learn = _setup(sgd)
    learn.model[0] = nn.Conv2d(1, 4, 5, padding=2)  # another model with the same schedule
    with pytest.raises(ck.CheckpointError, match=r"0\.weight"):
        learn.fit_one_cycle(1, 0.05, cbs=[ck.Checkpoint(tmp_path)], resume="auto")


def _cli(out, *extra):
    # 25 epochs of MNIST-1D = 1,000 optimizer steps: several seconds, so kills land mid-run
    return [
        sys.executable,
        "-m",
        "onecycle",
        "fit",
        "--dataset",
        "mnist1d",
        "--epochs",
        "25",
        "--checkpoint-every",
        "7",
        "--no-progress",
        "--seed",
        "3",
        "--out",
        str(out),
        *extra,
    ]  # fmt: skip  (1,000 steps: several seconds, so kills land mid-run


def _sha(out):
    return json.loads((out / "metrics.json").read_text())["final"]["weights_sha256"]


def _wait_for_new_checkpoints(folder, n, proc, timeout=120):
    """Wait until this process has written ``n`` checkpoints of its own."""
    before = set(ck.checkpoints(folder))
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if len(set(ck.checkpoints(folder)) - before) >= n:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_cli_killed_at_several_points_resumes_to_the_same_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(_cli(tmp_path / "ref"), check=True, capture_output=True, env=env)
    ref = _sha(tmp_path / "ref")
    out = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for _ in range(3):  # SIGKILL at random moments, re-running the same command each time
        proc = subprocess.Popen(_cli(out, "--resume"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        if _wait_for_new_checkpoints(out / "checkpoints", 1, proc):
            time.sleep(rng.uniform(0.0, 1.0))
            proc.send_signal(signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
        else:
            proc.wait()
    assert kills >= 2  # (a kill can miss only if a run had already finished)
    r = subprocess.run(_cli(out, "--resume"), capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert _sha(out) == ref


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_signal_checkpoints_and_exits_then_resumes_exactly(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(_cli(tmp_path / "ref"), check=True, capture_output=True, env=env)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert _wait_for_new_checkpoints(out / "checkpoints", 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {sig.name}" in err and "Traceback" not in err
    r = subprocess.run(_cli(out, "--resume"), capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert _sha(out) == _sha(tmp_path / "ref")


WRITER = """
import sys, torch
from onecycle import checkpoint as ck
folder = sys.argv[1]
state = {"format": ck.FORMAT_VERSION, "model": {"w": torch.randn(4_000_000)}}
for step in range(1, 10_000):
    state["position"] = {"step": step}
    ck.save(state, f"{folder}/ckpt-e0000-s{step:08d}.pt")
    print(step, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_bad_newest(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(1)
    survived = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        proc.stdout.readline()  # at least one complete checkpoint
        time.sleep(rng.uniform(0.0, 0.4))  # then die somewhere inside a later write
        proc.kill()
        proc.wait()
        path, state = ck.latest(tmp_path)  # the newest complete one, whatever was torn
        assert state["model"]["w"].shape == (4_000_000,)
        assert int(path.name[-11:-3]) == state["position"]["step"]
        survived += 1
    assert survived == 5
