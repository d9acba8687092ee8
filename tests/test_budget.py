"""Time-budgeted 1cycle (``budget=``, ``onecycle fit --budget``): a fake clock makes every
run reproducible, so these tests check exact step counts, the schedule's end, ending on
time with validation counted, and an interrupted run resumed to the same weights."""

import itertools
import json
import math
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Callback, ConfigError, Learner, accuracy, adamw
from onecycle import checkpoint as ck
from onecycle.budget import TimeBudget, parse_budget
from onecycle.cli import main
from onecycle.config import RECIPES
from onecycle.data import Loader
from onecycle.scheduler import Scheduler
from onecycle.schedules import one_cycle

STEPS_PER_EPOCH = 6  # 96 samples, batches of 16


class Ticks(Callback):
    """A fake clock: each batch takes ``batch`` seconds, each validation ``valid``."""

    order = -100

    def __init__(self, batch: float = 1.0, valid: float = 3.0, start: float = 0.0) -> None:
        self.now, self.batch, self.valid = start, batch, valid

    def __call__(self) -> float:
        return self.now

    def before_batch(self, learn):
        self.now += self.batch

    def before_validate(self, learn):
        self.now += self.valid


class Progress(Callback):
    """The progress each optimizer step ran at (the scheduler's ``t``)."""

    def __init__(self) -> None:
        self.ts = [0.0]

    def after_step(self, learn):
        self.ts.append(learn.scheduler.state_dict()["t"])


def _learner(clock: Ticks, seed: int = 0, cbs=()) -> Learner:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Dropout(0.2), nn.Flatten(), nn.Linear(256, 2))  # fmt: skip
    learn = Learner(model, Loader(x, y, 16, seed=5, crop_pad=1, hflip=True),
                    Loader(x, y, 48, shuffle=False), loss_func=F.cross_entropy,
                    metrics=[accuracy], opt_func=adamw, wd=1e-3, cbs=[clock, *cbs])  # fmt: skip
    learn.clock = clock
    return learn


# --- the budget itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("90", 90), (" 3m ", 180), ("3min", 180), ("1.5h", 5400), ("2 hours", 7200),
     (".5s", 0.5), (45, 45), (2.5, 2.5), (np.float64(7), 7)],
)  # fmt: skip
def test_parse_budget_reads_seconds_and_units(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "3 weeks", "-3m", "0", 0, -1, math.inf, math.nan,
                                 True, None, "1h30m", [3]])  # fmt: skip
def test_a_bad_budget_is_one_config_error_naming_it(bad):
    with pytest.raises(ConfigError, match=r"^budget=.*'90s', '3m', '3min', '1.5h'"):
        parse_budget(bad)


def _simulate(budget: TimeBudget, clock: list[float], step_s: float | Callable[[], float],
              valid_s: float | Callable[[], float], spe: int) -> list[float]:  # fmt: skip
    """The loop's calls for steps of ``step_s`` and epoch ends of ``valid_s`` seconds
    (numbers, or functions drawing each one)."""
    step = step_s if callable(step_s) else lambda: step_s
    valid = valid_s if callable(valid_s) else lambda: valid_s
    ts, k = [0.0], 0
    while not budget.done:
        clock[0] += step()
        k += 1
        t = budget.next_progress(k, (k - 1) // spe, (k - 1) % spe + 1)
        if budget.done:
            break
        ts.append(t)
        if k % spe == 0:
            clock[0] += valid()
    return ts


@pytest.mark.parametrize(
    ("step_s", "valid_s", "seconds"),
    [(1.0, 0.0, 100), (0.3, 2.0, 60), (2.0, 0.5, 7), (0.01, 0.0, 3600)],
)
def test_progress_rises_to_one_and_the_run_ends_on_time(step_s, valid_s, seconds):
    clock = [0.0]
    b = TimeBudget(seconds, max_steps=10**9, steps_per_epoch=10, clock=lambda: clock[0])
    ts = _simulate(b, clock, step_s, valid_s, 10)
    assert ts[-1] == 1.0 and all(0 <= a <= b_ <= 1 for a, b_ in itertools.pairwise(ts))
    assert ts.count(1.0) == 1  # only the last step is at the end value
    end = clock[0] + valid_s  # the last epoch's validation
    assert end <= seconds + 1e-9, (end, seconds)  # on time...
    assert end > seconds - step_s - valid_s - 1e-9  # ...and no earlier than it must


def test_the_epoch_cap_ends_the_run_when_it_comes_first():
    clock = [0.0]
    b = TimeBudget(1000, max_steps=30, steps_per_epoch=10, clock=lambda: clock[0])
    ts = _simulate(b, clock, 1.0, 0.0, 10)
    assert len(ts) == 30 and ts[-1] == 1.0 and b.ended_by == "epochs"
    assert ts[1] >= 1 / 29  # never slower than the epochs' own pace


@pytest.mark.parametrize("seed", range(5))
def test_a_changing_pace_never_rewinds_the_schedule(seed):
    """Steps of 0.1-3 s, epoch ends of 0-20 s, drawn at random: the progress only rises
    (held where the remaining steps were re-estimated up), and the end is on time."""
    rng = random.Random(seed)
    clock, steps = [0.0], []

    def step() -> float:
        steps.append(rng.uniform(0.1, 3.0))
        return steps[-1]

    b = TimeBudget(300, max_steps=10**6, steps_per_epoch=7, clock=lambda: clock[0])
    ts = _simulate(b, clock, step, lambda: rng.uniform(0.0, 20.0), 7)
    worst = max(steps)
    assert all(a <= c for a, c in itertools.pairwise(ts))
    assert ts[-1] == 1.0 and ts.count(1.0) == 1
    assert any(a == c < 1 for a, c in itertools.pairwise(ts))  # held at least once
    assert clock[0] <= 300 + worst


def test_at_least_two_steps_even_when_one_takes_the_whole_budget():
    clock = [0.0]
    b = TimeBudget(1, max_steps=100, steps_per_epoch=10, clock=lambda: clock[0])
    assert _simulate(b, clock, 5.0, 0.0, 10) == [0.0, 1.0]


def test_scheduler_step_at_a_given_progress_is_its_state():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
    sched = Scheduler(opt, {"lr": one_cycle(1.0)}, 10)
    sched.step(1.0)
    assert opt.param_groups[0]["lr"] == 1e-5 and sched.state_dict() == {"step": 1, "t": 1.0}
    again = Scheduler(opt, {"lr": one_cycle(1.0)}, 10)
    again.load_state_dict({"step": 1, "t": 1.0})
    assert opt.param_groups[0]["lr"] == 1e-5
    with pytest.raises(ConfigError, match=r"^t=1.5"):
        sched.step(1.5)


# --- the Learner: a fake clock, exact numbers ---------------------------------------------------


def test_fit_one_cycle_ends_on_time_with_the_lr_annealed():
    clock, seen = Ticks(batch=1.0, valid=3.0), Progress()
    learn = _learner(clock, cbs=[seen])
    learn.fit_one_cycle(100, 0.05, budget="40s")  # 100 epochs: only a cap
    rec = learn.recorder
    # an epoch is 6 steps of 1 s and a 3 s validation: 4 epochs (36 s), then one step and
    # the last epoch's validation end the 40 s exactly
    assert len(rec.lrs) == 25 and clock.now == 40.0 and len(rec.rows) == 5
    assert rec.lrs[0] == 0.05 / 25 and rec.lrs[-1] == 0.05 / 1e5  # start and end values
    assert max(rec.lrs) == pytest.approx(0.05, rel=1e-2)
    assert rec.moms[0] == rec.moms[-1] == 0.95 and min(rec.moms) == pytest.approx(0.85, 1e-3)
    ts = seen.ts[:-1]  # the progress of each step taken (the last entry: after the end)
    assert ts[0] == 0.0 and ts[-1] == 1.0 and ts == sorted(ts) and len(ts) == 25
    # the first epoch does not know the validation's cost yet: its pace assumes none
    assert ts[1] == pytest.approx(1 / 39) and ts[7] == pytest.approx(7 / 24)
    assert learn.budget.report() == {
        "seconds": 40.0, "elapsed": 40.0, "optimizer_steps": 25, "ended_by": "budget",
        "step_seconds": 1.0, "epoch_end_seconds": 3.0,
    }  # fmt: skip


def test_the_whole_fit_counts_validation_included():
    slow, fast = Ticks(batch=1.0, valid=9.0), Ticks(batch=1.0, valid=0.0)
    a, b = _learner(slow), _learner(fast)
    a.fit_one_cycle(100, 0.05, budget=60)
    b.fit_one_cycle(100, 0.05, budget=60)
    assert len(b.recorder.lrs) == 60 and fast.now == 60.0
    # 1 s per step, 9 s per validation, all inside the 60 s: fewer steps, on time
    assert slow.now == len(a.recorder.lrs) + 9 * len(a.recorder.rows)
    assert 60 - 1 - 9 < slow.now <= 60 and len(a.recorder.lrs) < 60
    assert a.recorder.lrs[-1] == b.recorder.lrs[-1] == 0.05 / 1e5


def test_the_epochs_cap_the_budget_and_still_anneal():
    clock = Ticks(batch=0.1, valid=0.0)
    learn = _learner(clock)
    learn.fit_one_cycle(2, 0.05, budget="1h")
    assert len(learn.recorder.lrs) == 2 * STEPS_PER_EPOCH
    assert learn.recorder.lrs[-1] == 0.05 / 1e5 and learn.budget.ended_by == "epochs"


def test_any_schedule_of_progress_runs_over_time():
    clock = Ticks(batch=1.0, valid=0.0)
    learn = _learner(clock)
    learn.fit(100, schedules={"lr": one_cycle(0.05, pct_start=0.5)}, budget=10)
    assert len(learn.recorder.lrs) == 10 and learn.recorder.lrs[-1] == 0.05 / 1e5


def test_what_a_budget_cannot_drive_is_refused():
    learn = _learner(Ticks())
    with pytest.raises(ConfigError, match=r"^lr_max='auto'.*budget"):
        learn.fit_one_cycle(3, "auto", budget=10)
    with pytest.raises(ConfigError, match=r"^wd='auto'.*budget"):
        learn.fit_one_cycle(3, 0.1, wd="auto", budget=10)
    with pytest.raises(ConfigError, match=r"^schedules=.*CLR"):
        learn.fit(3, schedules=lambda total: {"lr": one_cycle(0.1)}, budget=10)
    with pytest.raises(ConfigError, match=r"^start_epoch=1"):
        learn.fit_one_cycle(3, 0.1, start_epoch=1, budget=10)
    with pytest.raises(ConfigError, match=r"^budget='soon'"):
        learn.fit_one_cycle(3, 0.1, budget="soon")
    with pytest.raises(ConfigError, match=r"^budget='3m' .*fine_tune"):
        learn.fine_tune(2, 1e-3, budget="3m")
    assert learn.opt is None or learn.recorder.lrs == []  # nothing trained


# --- checkpoints and resume ---------------------------------------------------------------------


class Crash(Exception):
    pass


class CrashAt(Callback):
    order = 99  # after Checkpoint (97) has written this step (or this epoch)

    def __init__(self, step, epoch_end=False):
        self.step, self.epoch_end = step, epoch_end

    def after_step(self, learn):
        if learn.scheduler.step_count == self.step and not self.epoch_end:
            raise Crash(f"crash after step {self.step}")

    def after_epoch(self, learn):
        if learn.scheduler.step_count == self.step and self.epoch_end:
            raise Crash(f"crash after the epoch of step {self.step}")


def _weights(learn):
    return {k: v.clone() for k, v in learn.model.state_dict().items()}


@pytest.mark.parametrize(
    ("stop", "epoch_end"),
    [(3, False), (STEPS_PER_EPOCH, False), (STEPS_PER_EPOCH, True), (10, False), (24, True),
     (25, False)],
    ids=["step3", "step6", "epoch1-end", "step10", "epoch4-end", "last-step"],
)  # fmt: skip
def test_an_interrupted_budget_resumes_to_the_same_steps_and_weights(tmp_path, stop, epoch_end):
    """With a fake clock the resumed run is the uninterrupted one: the same step count, the
    same progress at every step, bit-identical weights and history (CPU). Step 25 is the
    last: that run is resumed after its last step, before its last validation."""
    torch.manual_seed(123)
    ref = _learner(Ticks())
    ref.fit_one_cycle(100, 0.05, budget=40, cbs=[ck.Checkpoint(tmp_path / "ref", every=1)])
    assert len(ref.recorder.lrs) == 25

    torch.manual_seed(123)
    first = _learner(Ticks())
    with pytest.raises(Crash):
        first.fit_one_cycle(100, 0.05, budget=40,
                            cbs=[ck.Checkpoint(tmp_path / "run", every=1),
                                 CrashAt(stop, epoch_end)])  # fmt: skip
    # a new process: another clock (its own origin), other init and random state
    torch.manual_seed(999)
    np.random.seed(1)
    random.seed(2)
    clock = Ticks(start=1e6)
    second = _learner(clock, seed=77)
    second.fit_one_cycle(100, 0.05, budget=40, cbs=[ck.Checkpoint(tmp_path / "run", every=1)],
                         resume="auto")  # fmt: skip
    assert second.budget.report() == ref.budget.report()
    # the resumed run's clock ran for what the first one had left: no time given twice
    assert clock.now - 1e6 == 40.0 - first.budget.state_dict()["elapsed"]
    for k, v in _weights(ref).items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    assert ref.recorder.hypers == second.recorder.hypers
    assert ref.recorder.losses == second.recorder.losses
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(ref.recorder.rows) == strip(second.recorder.rows)


def test_a_finished_budget_resumed_trains_nothing_more(tmp_path):
    learn = _learner(Ticks())
    learn.fit_one_cycle(100, 0.05, budget=40, cbs=[ck.Checkpoint(tmp_path)])
    done = _weights(learn)
    again = _learner(Ticks(), seed=5)
    again.fit_one_cycle(100, 0.05, budget=40, cbs=[ck.Checkpoint(tmp_path)], resume="auto")
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in done.items())
    assert len(again.recorder.lrs) == 25 and again.budget.ended_by == "budget"


def test_resuming_with_another_budget_or_none_is_refused(tmp_path):
    learn = _learner(Ticks())
    with pytest.raises(Crash):
        learn.fit_one_cycle(100, 0.05, budget=40, cbs=[ck.Checkpoint(tmp_path, every=1),
                                                      CrashAt(4)])  # fmt: skip
    for budget in (60, None):
        with pytest.raises(ConfigError, match=r"^resume=.*budget=40s"):
            _learner(Ticks()).fit_one_cycle(100, 0.05, budget=budget, resume=tmp_path)


# --- the command line ---------------------------------------------------------------------------

QUICK = ["fit", "--train-samples", "400", "--no-progress"]  # mnist1d: 4 steps per epoch


def test_cli_budget_end_to_end(tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert main([*QUICK, "--budget", "3s", "--checkpoint-every", "5", "--out", str(out)]) == 0
    logged = caplog.text
    m = json.loads((out / "metrics.json").read_text())
    b = m["budget"]
    assert m["config"]["budget"] == 3.0 and m["config"]["epochs"] is None  # no epoch cap
    assert b["seconds"] == 3.0 and b["ended_by"] == "budget"
    assert b["optimizer_steps"] == m["final"]["optimizer_steps"] == len(m["steps"]["lr"]) > 8
    # on time: the real clock of a shared machine, so a step's worth of slack
    assert b["elapsed"] <= 3.0 + max(0.5, 3 * b["step_seconds"]), b
    lr_max = RECIPES["mnist1d"]["lr_max"]
    assert m["steps"]["lr"][0] == pytest.approx(lr_max / 25)
    assert m["steps"]["lr"][-1] == pytest.approx(lr_max / 1e5, rel=1e-12)
    assert "time budget 3s (no epoch cap)" in logged and "ended by the time" in logged
    # the same command again with --resume: its last checkpoint is after the end
    assert main([*QUICK, "--budget", "3s", "--resume", "--out", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["final"]["weights_sha256"] == m["final"]["weights_sha256"]


def test_cli_budget_with_an_epoch_cap(tmp_path):
    args = [*QUICK, "--budget", "1h", "--epochs", "2", "--schedule", "wsd", "--out",
            str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["budget"]["ended_by"] == "epochs" and m["budget"]["optimizer_steps"] == 8
    assert m["steps"]["lr"][-1] == pytest.approx(0.0, abs=1e-12)  # wsd: cooled down to 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--budget", "soon"], "budget='soon' is invalid"),
        (["--budget", "0"], "budget='0' is invalid"),
        (["--budget", "3m", "--schedule", "clr"], "--schedule clr"),
        (["--budget", "3m", "--lr-max", "auto"], "lr_max='auto'"),
        (["--budget", "3m", "--wd", "auto"], "wd='auto'"),
        (["--budget", "3m", "--resume", "--extend"], "extend=True"),
    ],
)
def test_cli_refuses_what_a_budget_cannot_do_with_exit_2(extra, needle, tmp_path, capsys):
    assert main([*QUICK, *extra, "--out", str(tmp_path)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and needle in err[0], err


def test_cli_help_shows_the_budget(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--budget TIME" in text and "'3m'" in text and "upper bound" in text
