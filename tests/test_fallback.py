"""The fallback of lr_max="auto": a run that collapses is run again, exactly, at the next
lower candidate (onecycle.fallback)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Callback, Checkpoint, Learner
from onecycle.auto import AutoResult, auto_lr_max
from onecycle.checkpoint import checkpoints
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.fallback import CollapseGuard, fit_with_fallbacks


def _feed(guard: CollapseGuard, losses: list[float]) -> int | None:
    """Feed a loss curve to the guard; the step at which it fired, or None."""
    guard.before_fit(None)  # type: ignore[arg-type]
    for v in losses:
        try:
            guard.after_step(SimpleNamespace(loss_global=torch.tensor(v)))  # type: ignore[arg-type]
        except Exception:
            return guard.step
    return None


def _falls(n: int, top: float = 2.3, bottom: float = 0.5) -> list[float]:
    return [bottom + (top - bottom) * math.exp(-i / (n / 8)) for i in range(n)]


def test_guard_keeps_a_run_that_trains():
    assert _feed(CollapseGuard(1000), _falls(1000)) is None


def test_guard_reads_past_a_catapult_that_comes_back_down():
    curve = _falls(1000)
    curve[300:330] = [4 * 2.3] * 30  # a spike to 4x the start, 3% of the run, then recovery
    assert _feed(CollapseGuard(1000), curve) is None


def test_guard_fires_when_the_loss_goes_back_to_its_start_and_stays():
    curve = _falls(400) + [2.3] * 600  # trains, then back at chance for good
    guard = CollapseGuard(1000)
    step = _feed(guard, curve)
    assert step is not None and 400 + guard.sustain <= step < 400 + guard.sustain + 60
    assert "starting level" in (guard.fired or "")


def test_guard_fires_without_progress_by_the_end_of_the_warm_up():
    guard = CollapseGuard(1000, pct_start=0.3)
    assert _feed(guard, [2.3] * 1000) == 300 and "no progress" in (guard.fired or "")
    assert _feed(CollapseGuard(1000, pct_start=None), [2.3] * 1000) is None
    assert _feed(CollapseGuard(100), [2.3] * 100) is None  # a 25-step warm-up: too short


def test_guard_fires_at_once_on_a_non_finite_loss():
    assert _feed(CollapseGuard(1000), [*_falls(100), math.nan]) == 101


def test_a_guard_watches_one_run_and_refuses_a_second():
    learn = _learner()
    guard = CollapseGuard(2 * 32)
    learn.fit_one_cycle(1, 0.1, cbs=[guard])  # one run in two fits, as fine_tune makes
    learn.fit_one_cycle(1, 0.1, cbs=[guard])
    assert guard.fired is None and guard.step == 64
    with pytest.raises(ConfigError, match="new guard for a new run: its 64 steps ran"):
        learn.fit_one_cycle(1, 0.1, cbs=[guard])


# --- end to end: a saboteur that breaks training above an LR -------------------------------


class Saboteur(Callback):
    """Above ``lr``, wipes the last layer after each step: it answers one class, and the
    loss goes above its starting level and stays (or, with ``nan``, the weights become
    NaN). Not ``affects_update``, so the range test and probes never see it: only the
    run does."""

    def __init__(self, lr: float, nan: bool = False) -> None:
        self.lr, self.nan = lr, nan

    def after_step(self, learn: Learner) -> None:
        if learn.opt.param_groups[-1]["lr"] > self.lr:
            with torch.no_grad():
                last = learn.model[-1]
                last.weight.fill_(math.nan if self.nan else 0.0)
                # one class always, confidently: a loss well above the untrained model's
                last.bias.copy_(torch.tensor([3.0, -3.0]) if not self.nan else last.bias)


def _learner(cbs: tuple = ()) -> Learner:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    return Learner(model, Loader(x, y, 32, seed=0), loss_func=F.cross_entropy, cbs=cbs)


def _auto(total: int) -> AutoResult:
    return AutoResult(1.0, "test", None, [1.0, 0.316, 0.1], [], 0.0, total)


@pytest.mark.parametrize("nan", [False, True])
def test_a_collapsed_run_is_run_again_exactly_at_the_next_lower_candidate(nan):
    epochs, total = 6, 6 * 32
    learn, auto = _learner(), _auto(total)
    sab = Saboteur(0.5, nan)
    peak = fit_with_fallbacks(
        learn, lambda lr, extra: learn.fit_one_cycle(epochs, lr, cbs=[sab, *extra]), auto, total
    )
    assert peak == auto.lr_max == 0.316
    [r] = auto.rollbacks
    assert r["lr_max"] == 1.0 and 0 < r["step"] < total and auto.steps_used == r["step"]
    assert ("non-finite" in r["reason"]) == nan
    # what remains is the run at 0.316, bit for bit, and only that run
    ref = _learner()
    ref.fit_one_cycle(epochs, 0.316, cbs=[sab])
    for a, b in zip(learn.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)
    assert len(learn.recorder.lrs) == total
    assert max(learn.recorder.lrs) == pytest.approx(0.316, rel=1e-3)


@pytest.mark.parametrize("trained", [True, False])
def test_no_progress_by_the_warm_up_ends_a_run_only_where_a_probe_trained(trained):
    total = 1000  # a plateau through the warm-up (250 steps), then the run leaves it
    curve = [2.3] * 400 + _falls(600)
    auto = AutoResult(1.0, "test", None, [1.0, 0.316], [], 0.0, total, trained=trained)
    runs: list[int | None] = []
    peak = fit_with_fallbacks(_learner(), lambda lr, extra: runs.append(
        _feed(extra[0], curve)), auto, total)  # fmt: skip
    assert peak == (0.316 if trained else 1.0)
    assert runs[0] == (round(0.25 * total) if trained else None)


def test_the_lowest_candidate_is_only_watched():
    learn, total = _learner(), 4 * 32
    auto = AutoResult(1.0, "test", None, [1.0], [], 0.0, total)
    fit_with_fallbacks(learn, lambda lr, extra: learn.fit_one_cycle(4, lr, cbs=[Saboteur(0.5),
                       *extra]), auto, total)  # fmt: skip
    assert auto.rollbacks == [] and auto.lr_max == 1.0  # collapsed, and left for the user to see
    assert not auto.stalled  # it trained before it collapsed


def test_an_abandoned_runs_checkpoints_are_removed(tmp_path):
    ck = Checkpoint(tmp_path, keep=10)
    learn, total = _learner(cbs=(ck,)), 6 * 32
    auto = _auto(total)
    sab = Saboteur(0.5)
    fit_with_fallbacks(learn, lambda lr, extra: learn.fit_one_cycle(6, lr, cbs=[sab, *extra]),
                       auto, total, cbs=[ck])  # fmt: skip
    assert auto.rollbacks  # the first run wrote checkpoints before it collapsed
    names = [p.name for p in checkpoints(tmp_path)]
    assert len(names) == 6 and names == [p.name for p in ck.written][::-1]


def test_fit_one_cycle_auto_falls_back_when_its_pick_collapses():
    probe_learn = _learner()
    pick = auto_lr_max(probe_learn, n_epoch=6)  # the run's own search
    assert pick.lr_max is not None
    lower = sorted((c for c in pick.candidates if c < pick.lr_max), reverse=True)
    assert lower, "the test needs a candidate below the pick"
    learn = _learner()
    learn.fit_one_cycle(6, "auto", cbs=[Saboteur(math.sqrt(pick.lr_max * lower[0]))])
    auto = learn.auto_result
    assert auto is not None and auto.lr_max == lower[0]
    assert [r["lr_max"] for r in auto.rollbacks] == [pick.lr_max]
    assert auto.compute_ratio > pick.compute_ratio  # the abandoned steps are counted
    assert learn.recorder.rows[-1]["train_loss"] < 0.5


# --- fine_tune: the frozen and the unfrozen phase, watched as one run -----------------------


class PhaseSaboteur(Saboteur):
    """A ``Saboteur`` in one of ``fine_tune``'s phases only (``"frozen"`` or ``"unfrozen"``)."""

    def __init__(self, lr: float, phase: str, nan: bool = False) -> None:
        super().__init__(lr, nan)
        self.phase = phase

    def after_step(self, learn: Learner) -> None:
        unfrozen = all(p.requires_grad for p in learn.model.parameters())
        if unfrozen == (self.phase == "unfrozen"):
            super().after_step(learn)


def _tune_learner() -> Learner:
    learn = _learner()  # the same model and data, with the body and the head as two groups
    body_head = lambda m: [list(m[0].parameters()), list(m[2].parameters())]  # noqa: E731
    return Learner(learn.model, learn.train_data, loss_func=F.cross_entropy, splitter=body_head)


@pytest.mark.parametrize("phase,nan", [("frozen", False), ("frozen", True), ("unfrozen", False)])
def test_fine_tune_auto_falls_back_and_runs_both_phases_again_at_the_next_candidate(phase, nan):
    kw = {"epochs": 4, "freeze_epochs": 4}
    plain = _tune_learner()
    plain.fine_tune(base_lr="auto", **kw)
    pick = plain.auto_result
    assert pick is not None and pick.lr_max is not None and not pick.rollbacks
    lower = sorted((c for c in pick.candidates if c < pick.lr_max), reverse=True)
    assert lower, "the test needs a candidate below the pick"
    # breaks the head above an LR the pick reaches in that phase and the next candidate
    # does not (the unfrozen phase trains the head at base_lr / 2)
    cut = math.sqrt(pick.lr_max * lower[0]) / (2 if phase == "unfrozen" else 1)
    sab = PhaseSaboteur(cut, phase, nan)
    learn = _tune_learner()
    learn.fine_tune(base_lr="auto", cbs=[sab], **kw)
    auto = learn.auto_result
    assert auto is not None and auto.lr_max == lower[0]
    [r] = auto.rollbacks
    frozen_steps = kw["freeze_epochs"] * 32
    assert r["lr_max"] == pick.lr_max and auto.steps_used == pick.steps_used + r["step"]
    assert (r["step"] <= frozen_steps) == (phase == "frozen")  # the step counts both phases
    assert ("non-finite" in r["reason"]) == nan
    # what remains is fine_tune at that base_lr, bit for bit, discriminative LRs included
    ref = _tune_learner()
    ref.fine_tune(base_lr=lower[0], cbs=[sab], **kw)
    ours, theirs = learn.model.state_dict(), ref.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    body, head = zip(*learn.recorder.hypers["lr"])  # the unfrozen phase's LRs per group
    assert max(head) == pytest.approx(lower[0] / 2, rel=1e-3)
    assert max(body) == pytest.approx(lower[0] / 2 / 100, rel=1e-3)  # lr_mult
    assert learn.recorder.hypers["lr"] == ref.recorder.hypers["lr"]
    assert all(p.requires_grad for p in learn.model.parameters())


class Folder(Callback):
    """Lists the checkpoints on disk when each fit starts."""

    def __init__(self, folder) -> None:
        self.folder, self.seen = folder, []

    def before_fit(self, learn: Learner) -> None:
        self.seen.append([p.name for p in checkpoints(self.folder)])


def test_fine_tune_fallback_removes_both_phases_checkpoints(tmp_path):
    kw = {"epochs": 4, "freeze_epochs": 4}
    plain = _tune_learner()
    plain.fine_tune(base_lr="auto", **kw)
    pick = plain.auto_result
    assert pick is not None and pick.lr_max is not None
    lower = sorted((c for c in pick.candidates if c < pick.lr_max), reverse=True)
    sab = PhaseSaboteur(math.sqrt(pick.lr_max * lower[0]) / 2, "unfrozen")
    ck, folder = Checkpoint(tmp_path, every=16, keep=100), Folder(tmp_path)
    learn = _tune_learner()
    learn.fine_tune(base_lr="auto", cbs=[sab, ck, folder], **kw)
    assert learn.auto_result is not None and len(learn.auto_result.rollbacks) == 1
    first, second, third, fourth = folder.seen  # two fits abandoned, two kept
    assert first == [] and second  # the frozen phase wrote checkpoints; the unfrozen collapsed
    assert third == []  # the rerun starts with nothing of the abandoned attempt on disk
    assert fourth == second  # the rerun's frozen phase wrote its own, under the same names
    # (the two phases write the same names: their epochs and steps both start at 0)
    assert {p.name for p in checkpoints(tmp_path)} == {p.name for p in ck.written}


@pytest.mark.parametrize("lowest", [False, True])
def test_a_run_that_never_trains_is_said_loudly(lowest, caplog):
    total = 1000  # a plateau no probe left (trained=False): nothing fires, nothing reruns
    cands = [1.0] if lowest else [1.0, 0.316]
    flat = AutoResult(1.0, "test", None, cands, [], 0.0, total, trained=False)
    with caplog.at_level("WARNING", logger="onecycle"):
        peak = fit_with_fallbacks(_learner(), lambda lr, extra: _feed(extra[0], [2.3] * total),
                                  flat, total)  # fmt: skip
    assert peak == 1.0 and flat.rollbacks == [] and flat.stalled
    assert flat.to_dict()["stalled"] and "never trained" in repr(flat)
    assert any("never trained" in r.message for r in caplog.records)
    trains = AutoResult(1.0, "test", None, cands, [], 0.0, total, trained=False)
    fit_with_fallbacks(_learner(), lambda lr, extra: _feed(extra[0], _falls(total)), trains,
                       total)  # fmt: skip
    assert not trains.stalled


def test_the_lowest_candidate_is_watched_in_a_real_run():
    def full_batch() -> Learner:  # one batch per step: the loss moves only if it trains
        learn = _learner()
        learn.train_data = Loader(learn.train_data.x, learn.train_data.y, 1024)
        return learn

    for lr, stalled in ((1e-7, True), (0.1, False)):
        learn, total = full_batch(), 40
        auto = AutoResult(lr, "test", None, [lr], [], 0.0, total, trained=False)
        run = learn.fit_one_cycle
        fit_with_fallbacks(learn, lambda p, extra, run=run: run(40, p, cbs=extra), auto, total)
        assert auto.stalled == stalled and len(learn.recorder.lrs) == total
