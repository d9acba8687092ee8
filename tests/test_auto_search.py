"""lr_max="auto" v6 (onecycle.auto): the budget held on any run, no refusal on a model that
trains, resume without a second search - for the default search (probes) and the search
on prefixes of the run (onecycle.prefixes: rungs, the extension upward, the horizon, the
run continuing the pick's prefix bit for bit, the validation split)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onecycle.auto as A
import onecycle.prefix_search as PS
from onecycle import Callback, Checkpoint, Learner, accuracy
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.prefixes import Prefix, validation_split
from onecycle.range_test import RangeTestResult


def _data(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, :4].sum(1) > 0).long()


def _learner(n: int = 1024, bs: int = 32, **kw) -> Learner:
    torch.manual_seed(0)
    x, y = _data(n)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    return Learner(model, Loader(x, y, bs, seed=0), Loader(x, y, 256), loss_func=F.cross_entropy,
                   metrics=[accuracy], **kw)  # fmt: skip


@pytest.fixture
def prefixes(monkeypatch):
    """The search on prefixes of the run (``auto.METHOD = "prefixes"``)."""
    monkeypatch.setattr(A, "METHOD", "prefixes")


@pytest.fixture(params=["probes", "prefixes"])
def method(request, monkeypatch):
    monkeypatch.setattr(A, "METHOD", request.param)
    return request.param


def _fake_probe(score_of):
    """``probe`` that trains nothing: the held-back loss is ``score_of(lr)`` (the model as
    it is: its real held-back loss)."""
    real = A.probe

    def probe(learn, lr, steps, **kw):
        if steps == 0:
            return real(learn, lr, steps, **kw)
        lr = lr[-1] if isinstance(lr, list) else lr
        return A.ProbeResult(lr, steps, score_of(lr))

    return probe


def _fake_advance(score_of):
    """``advance`` that trains nothing: the score is ``score_of(lr, to)``."""
    calls: list[tuple[float, int]] = []

    def advance(learn, prefix: Prefix, to: int, **kw) -> float:
        calls.append((prefix.lr_max, to))
        s = score_of(prefix.lr_max, to)
        prefix.steps, prefix.state = to, {"recorder": {"losses": []}}
        prefix.scores[to] = s
        prefix.diverged = math.isinf(s)
        return s

    return advance, calls


@pytest.mark.parametrize("budget", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("total", [60, 400, 2000])
def test_the_search_holds_its_budget_restores_and_repeats(budget, total, method):
    learn = _learner()
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = A.auto_lr_max(learn, total, budget=budget)
    assert res.lr_max is not None, res.reason
    assert min(res.candidates) <= res.lr_max <= max(res.candidates)
    assert res.compute_ratio <= budget + 1e-9  # (prefixes: the pick's belongs to the run)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    again = A.auto_lr_max(learn, total, budget=budget)
    assert again.lr_max == res.lr_max
    assert [p.scores for p in again.prefixes] == [p.scores for p in res.prefixes]
    assert again.probes == res.probes


def test_rungs_keep_the_better_half_and_the_pick_is_the_lowest_last_score(monkeypatch, prefixes):
    best = 10**-1.5  # the third of four candidates; the second nearly as good at rung 1

    def score(lr, to):
        return 0.1 + abs(math.log10(lr / best)) * (1.0 if to > 100 else 0.01)

    fake, calls = _fake_advance(score)
    monkeypatch.setattr(PS, "advance", fake)
    res = A.auto_lr_max(_learner(), 4000, budget=0.3)
    r1, r2 = res.rungs
    first = [lr for lr, to in calls if to == r1]
    second = [lr for lr, to in calls if to == r2]
    assert len(first) == A.MAX_CANDIDATES and len(second) == A.KEEP
    ranked = sorted(first, key=lambda lr: score(lr, r1))
    assert sorted(second) == sorted(ranked[: A.KEEP])
    assert res.lr_max == pytest.approx(best) and "lowest held-back loss" in res.reason


def test_a_winning_top_candidate_brings_in_the_lattice_point_above(monkeypatch, prefixes):
    fake, calls = _fake_advance(lambda lr, to: 1.0 / (1 + lr))  # the larger, the better
    monkeypatch.setattr(PS, "advance", fake)
    res = A.auto_lr_max(_learner(), 4000, budget=1.0)
    top = max(lr for lr, _ in calls[: A.MAX_CANDIDATES])
    assert res.lr_max == pytest.approx(top * 10**0.5)  # beyond the sweep's window
    assert res.candidates[0] == res.lr_max


def test_probes_go_above_the_window_while_its_top_wins(monkeypatch):
    monkeypatch.setattr(A, "lr_sweep", _flat_sweep)  # the window: the lattice from 0.316 down
    monkeypatch.setattr(A, "probe", _fake_probe(lambda lr: 0.5 / (1 + lr)))  # higher: better
    res = A.auto_lr_max(_learner(), 4000, budget=0.3)
    top = A.DEFAULT_TOP["sgd"]
    assert res.lr_max == res.candidates[0] and res.lr_max > top * 3  # one or more above
    assert res.lr_max in A.lattice(res.lr_max * (1 + 1e-9), 1)  # lattice points, exactly
    assert "above the window" in res.reason and res.trained
    assert res.compute_ratio <= 0.3 + 1e-9  # as far as the budget goes, no further


def test_a_point_above_that_loses_does_not_push_the_pick_down(monkeypatch):
    top = A.DEFAULT_TOP["sgd"]

    def score(lr: float) -> float:  # best at the window's top; the point above is worse
        return 0.6 if lr > top * 1.01 else 0.2 + 0.1 * abs(math.log10(lr / top))

    monkeypatch.setattr(A, "lr_sweep", _flat_sweep)
    monkeypatch.setattr(A, "probe", _fake_probe(score))
    res = A.auto_lr_max(_learner(), 4000, budget=0.3)
    assert res.candidates[0] == pytest.approx(top * 10**0.5)  # it was tried...
    assert res.lr_max == pytest.approx(top)  # ...and only says "not higher"


def test_fine_tune_holds_its_auto_budget():
    spent = {}
    for budget in (0.1, 1.0):
        learn = _learner()
        learn.fine_tune(8, base_lr="auto", auto_budget=budget)
        assert learn.auto_result is not None
        spent[budget] = learn.auto_result.compute_ratio
        assert spent[budget] <= budget + 1e-9
    assert spent[1.0] > 0.3  # the budget reached the search (it was always 0.3)
    with pytest.raises(ConfigError, match="auto_budget"):
        _learner().fine_tune(1, base_lr=1e-3, auto_budget=0.1)


def _flat_sweep(learn, *a, **kw) -> RangeTestResult:
    lrs = [1e-6 * (1e7 ** (i / 59)) for i in range(60)]
    res = RangeTestResult(lrs, [0.69] * 60, [0.69] * 60, "completed 60 steps", "exp", [1.0])
    res.analysis_curve = [0.69] * 60
    return res


def test_a_flat_sweep_probes_the_default_lattice_instead_of_refusing(monkeypatch, method):
    monkeypatch.setattr(A, "lr_sweep", _flat_sweep)
    learn = _learner()
    learn.fit_one_cycle(8, "auto")
    res = learn.auto_result
    assert res is not None and res.lr_max is not None
    top = A.DEFAULT_TOP["sgd"]
    assert any(math.isclose(c, top) for c in res.candidates)
    above = [c for c in res.candidates if c > top * 1.01]  # extended while the top won
    assert all(math.isclose(c, top * 10 ** (0.5 * (i + 1))) for i, c in enumerate(above[::-1]))
    assert "the lattice from" in res.reason
    assert learn.recorder.rows[-1]["accuracy"] > 0.9


def test_only_a_search_where_everything_diverged_is_refused(monkeypatch, prefixes):
    fake, calls = _fake_advance(lambda lr, to: math.inf)
    monkeypatch.setattr(PS, "advance", fake)
    learn = _learner()
    with pytest.raises(ConfigError, match="every candidate diverged"):
        learn.fit_one_cycle(20, "auto")
    first = {lr for lr, _ in calls}
    assert len(first) > A.MAX_CANDIDATES  # it looked lower before giving up


def test_probes_refuse_only_when_every_probe_diverged(monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(A, "probe", _fake_probe(lambda lr: seen.append(lr) or math.inf))
    with pytest.raises(ConfigError, match="every probe diverged"):
        _learner().fit_one_cycle(20, "auto")
    assert min(seen) < min(seen[:-2])  # it looked lower before giving up


def test_probes_where_nothing_trains_run_the_largest_that_did_not_get_worse(monkeypatch):
    level = {}
    real = A.probe

    def probe(learn, lr, steps, **kw):  # a plateau: every probe at the untrained loss
        r = real(learn, lr, 0, **kw)
        level.setdefault("start", r.loss)
        lr = lr[-1] if isinstance(lr, list) else lr
        return A.ProbeResult(lr, steps, level["start"] * (1.5 if lr > 0.5 else 1.0))

    monkeypatch.setattr(A, "probe", probe)
    res = A.auto_lr_max(_learner(), 2000)
    assert "no probe trained" in res.reason and not res.trained
    assert res.lr_max == max(c for c in res.candidates if c <= 0.5)


@pytest.mark.parametrize("worse", [False, True])
def test_when_nothing_trains_the_largest_that_did_not_get_worse_runs(
    monkeypatch, caplog, worse, prefixes
):
    start = A.held_loss  # the untrained model's held-back loss, as the search measures it
    level: list[float] = []

    def score(lr, to):  # a plateau: every candidate at the untrained loss (the top worse)
        return level[0] * (1.0 + (0.5 if worse and lr == top else 0.0))

    def held_loss(learn, held):
        level[:] = [start(learn, held)]
        return level[0]

    top = A.DEFAULT_TOP["sgd"]
    monkeypatch.setattr(A, "held_loss", held_loss)
    monkeypatch.setattr(A, "lr_sweep", _flat_sweep)
    fake, _ = _fake_advance(score)
    monkeypatch.setattr(PS, "advance", fake)
    res = A.auto_lr_max(_learner(), 2000)
    assert res.lr_max == pytest.approx(top / 10**0.5 if worse else top), res.candidates
    assert "no candidate had trained" in res.reason and not res.trained
    assert any("no candidate had trained" in r.message for r in caplog.records)


def test_the_run_continues_the_picks_prefix_and_equals_a_plain_run_bit_for_bit(prefixes):
    learn = _learner()
    learn.fit_one_cycle(6, "auto")
    auto = learn.auto_result
    assert auto is not None and auto.lr_max is not None and auto.reused_steps > 0
    # the plain run: the same model and data order, on the same split, at the same peak
    ref = _learner()
    ref.train_data, _ = validation_split(ref.train_data, auto.held_batches)
    ref.fit_one_cycle(6, auto.lr_max)
    for a, b in zip(learn.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)
    assert learn.recorder.hypers == ref.recorder.hypers
    assert learn.recorder.losses == ref.recorder.losses  # the prefix's history is the run's
    assert [r.get("accuracy") for r in learn.recorder.rows[1:]] == [
        r.get("accuracy") for r in ref.recorder.rows[1:]
    ]  # validation from the first epoch the run (not the search) finished
    assert learn.train_data is not ref.train_data and len(learn.train_data) == 32  # put back


class _Spy(Callback):
    def __init__(self) -> None:
        self.rows: set[tuple[float, ...]] = set()

    def before_batch(self, learn: Learner) -> None:
        self.rows.update(tuple(r.tolist()) for r in learn.batch[0])


def test_the_validation_split_is_never_trained_on(prefixes):
    learn = _learner()
    spy = _Spy()
    learn.fit_one_cycle(4, "auto", cbs=[spy])
    auto = learn.auto_result
    assert auto is not None and auto.held_samples == auto.held_batches * 32 > 0
    _, held = validation_split(learn.train_data, auto.held_batches)
    held_rows = {tuple(r.tolist()) for xb, _ in held for r in xb}
    assert len(held_rows) == auto.held_samples and spy.rows.isdisjoint(held_rows)
    assert len(spy.rows) == 1024 - auto.held_samples


class _Stop(Callback):
    """Stops the run (as a kill would) after ``at`` optimizer steps of the real run."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, learn: Learner) -> None:
        if learn.scheduler.step_count == self.at:
            raise KeyboardInterrupt


def test_resume_reads_the_pick_from_the_checkpoint_and_never_searches_again(
    tmp_path, monkeypatch, method
):
    whole = _learner()
    whole.fit_one_cycle(6, "auto")
    pick = whole.auto_result.lr_max
    learn = _learner()
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(6, "auto", cbs=[Checkpoint(tmp_path, every=10), _Stop(100)])
    monkeypatch.setattr(A, "auto_lr_max", lambda *a, **k: pytest.fail("searched again"))
    again = _learner()
    again.fit_one_cycle(6, "auto", cbs=[Checkpoint(tmp_path, every=10)], resume="auto")
    assert again.auto_result.lr_max == pick and "not searched again" in again.auto_result.reason
    for a, b in zip(whole.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)


def test_auto_budget_is_checked():
    with pytest.raises(ConfigError, match="auto_budget"):
        _learner().fit_one_cycle(2, 0.1, auto_budget=0.3)
    with pytest.raises(ConfigError, match="budget"):
        _learner().fit_one_cycle(2, "auto", auto_budget=0.0)
    with pytest.raises(ConfigError, match="start_epoch"):
        _learner().fit_one_cycle(2, "auto", start_epoch=1)


def test_a_short_run_gets_a_cheaper_search_and_says_so(method):
    p = A.plan(120, 0.3, 1.0)
    assert p.sweep == 0 and p.k in (2, 3) and len(p.rungs) == 1 and p.note
    learn = _learner()
    learn.fit_one_cycle(2, "auto")  # 64 steps (58 with the split): under 20 to spend
    assert learn.auto_result.lr_max is not None and learn.auto_result.compute_ratio <= 0.3
    assert "budget of 0.3" in learn.auto_result.reason


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_newcomers_cnn_on_mnist1d_is_never_refused(seed):
    """The issue's report: Learner(cnn1d(), Loader(mnist1d, 100)) with the default SGD,
    fit_one_cycle(5, "auto") on a fresh model was refused on 3 of 3 seeds."""
    from onecycle.data import load_mnist1d
    from onecycle.models import cnn1d

    d = load_mnist1d()
    torch.manual_seed(seed)
    learn = Learner(cnn1d(), Loader(d.x_train, d.y_train, 100, seed=seed),
                    Loader(d.x_test, d.y_test, 1000, shuffle=False),
                    loss_func=F.cross_entropy, metrics=[accuracy])  # fmt: skip
    learn.fit_one_cycle(5, "auto")
    assert learn.auto_result.lr_max is not None
    assert learn.auto_result.compute_ratio <= A.BUDGET + 1e-9
    assert learn.recorder.rows[-1]["accuracy"] > 0.15, learn.auto_result  # chance: 0.10


def test_horizon_moves_the_pick_to_the_nearest_lower_candidate(monkeypatch, prefixes):
    monkeypatch.setattr(PS, "HORIZON_BETA", 0.5)
    ps = [Prefix(1.0, 100, {}, {100: 0.1}), Prefix(10**-0.5, 100, {}, {100: 0.2}),
          Prefix(0.1, 30, {}, {30: 0.3}), Prefix(10**-1.5, 30, {}, {30: 0.4})]  # fmt: skip
    # 1.0 * (100/1000)**0.5 = 0.316: one lattice step down, a candidate with a state
    assert A.horizon(ps[0], ps, 1000).lr_max == pytest.approx(10**-0.5)
    # (100/10000)**0.5 = 0.1: two steps down
    assert A.horizon(ps[0], ps, 10_000).lr_max == pytest.approx(0.1)
    # far below every candidate: the lowest; a diverged (inf) one is never chosen
    ps[3].scores = {30: math.inf}
    assert A.horizon(ps[0], ps, 10**8).lr_max == pytest.approx(0.1)
    monkeypatch.setattr(PS, "HORIZON_BETA", 0.0)
    assert A.horizon(ps[0], ps, 1000) is ps[0]


@pytest.mark.slow
def test_cli_auto_run_killed_and_resumed_ends_on_the_same_weights_without_searching(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    argv = ["fit", "--dataset", "mnist1d", "--epochs", "12", "--lr-max", "auto",
            "--checkpoint-every", "20", "--no-progress"]  # fmt: skip
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}

    def cli(*extra: str, out: str, wait=None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "onecycle", *argv, *extra, "--out", str(tmp_path / out)]
        if wait is None:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not wait():
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out_, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(cmd, proc.returncode, out_, err)

    whole = cli(out="whole")
    assert whole.returncode == 0, whole.stderr
    ref = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    folder = tmp_path / "cut" / "checkpoints"

    def mid_run() -> bool:  # a checkpoint of the run itself (after the search), at step 80+
        return any(int(p.name.split("-s")[1][:8]) >= 80 for p in folder.glob("ckpt-*.pt"))

    cut = cli(out="cut", wait=mid_run)
    assert cut.returncode == 128 + signal.SIGTERM, cut.stderr
    again = cli("--resume", out="cut")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert not [ln for ln in lines if ln.startswith(("range test:", "search: "))], lines
    assert any("not searched again" in ln for ln in lines), lines
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m["auto"]["lr_max"] == ref["auto"]["lr_max"]
    assert m["final"]["weights_sha256"] == ref["final"]["weights_sha256"]


def test_a_probe_in_another_data_order_keeps_its_held_back_samples():
    learn = _learner()
    a, b = (A.probe(learn, 0.1, 16, order=k) for k in (0, 1))
    assert a.loss != b.loss  # another order of the same data...
    s0, s1 = (A.probe(learn, 0.1, 0, order=k) for k in (0, 1))
    assert s0.batch_losses == s1.batch_losses  # ...scored on the same held-back samples
    assert A.probe(learn, 0.1, 16, order=1) == b  # one order, one probe: repeatable
    with pytest.raises(ConfigError, match="order"):
        A.probe(learn, 0.1, 16, order=-1)


def test_the_probes_rank_by_the_mean_over_data_orders():
    learn = _learner()
    res = A.auto_lr_max(learn, 4000, budget=0.3)
    assert {p.orders for p in res.probes} == {A.ORDERS} and "x 2 data orders" in res.reason
    p = res.probes[0]
    runs = [A.probe(learn, p.lr_max, p.steps, order=k) for k in range(A.ORDERS)]
    assert p.loss == pytest.approx(sum(r.loss for r in runs) / A.ORDERS)
    assert res.compute_ratio <= 0.3 + 1e-9


def test_short_probes_and_other_loaders_get_one_order():
    short = A.auto_lr_max(_learner(), 400, budget=0.1)  # a probe of 5 steps: not halved
    assert short.probes and {p.orders for p in short.probes} == {1}
    learn = _learner()
    learn.train_data = list(learn.train_data)  # batches with one order only
    res = A.auto_lr_max(learn, 4000, budget=0.3)
    assert res.probes and {p.orders for p in res.probes} == {1}


def test_averaged_is_inf_when_any_order_diverged():
    ok = A.ProbeResult(0.1, 8, 0.3, batch_losses=(0.3,))
    bad = A.ProbeResult(0.1, 8, math.inf)
    assert math.isinf(A.averaged([ok, bad]).loss) and A.averaged([ok, bad]).orders == 2


# --- the duel (budget 1.0: the probes' pick and its neighbours as prefixes past the peak) ---


def test_the_default_budget_never_duels():
    learn = _learner()
    learn.fit_one_cycle(6, "auto")
    auto = learn.auto_result
    assert auto.prefixes == [] and auto.held_batches == 0 and "duel" not in auto.reason


def _duel_run(**kw) -> Learner:
    learn = _learner(**kw)
    learn.fit_one_cycle(6, "auto", auto_budget=1.0)
    auto = learn.auto_result
    assert auto is not None and "duel of prefixes" in auto.reason, auto.reason
    (rung,) = auto.rungs
    assert rung >= PS.DUEL_MIN * 0.25 * auto.total_steps
    assert all(p.steps == rung for p in auto.prefixes)
    lrs = sorted(p.lr_max for p in auto.prefixes)
    assert len(lrs) == PS.DUEL_K
    assert all(math.isclose(b / a, 10**0.5) for a, b in itertools.pairwise(lrs))
    assert auto.lr_max == min(auto.prefixes, key=lambda p: p.score).lr_max
    assert auto.compute_ratio <= 1.0 + 1e-9
    # a rollback only goes lower: the prefixes above the winner are not kept
    assert all((p.state is None) == (p.lr_max > auto.lr_max) for p in auto.prefixes)
    return learn


def test_a_duel_continues_the_winners_prefix_bit_for_bit_on_a_small_split():
    learn = _duel_run()
    auto = learn.auto_result
    assert auto.reused_steps == auto.rungs[0] and auto.held_batches == 1  # 2% of 1024: a batch
    ref = _learner()  # a plain run at the winner, on the same split
    ref.train_data, _ = validation_split(ref.train_data, auto.held_batches)
    ref.fit_one_cycle(6, auto.lr_max)
    for a, b in zip(learn.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)
    assert learn.recorder.losses == ref.recorder.losses


def _duel_with(monkeypatch, score_of, probe_pick=0.1):
    """A budget-1.0 search whose probes pick ``probe_pick`` and whose duel scores
    ``score_of(lr)`` (nothing trains)."""
    monkeypatch.setattr(A, "probe", _fake_probe(lambda lr: 0.1 if lr == probe_pick else 0.5))
    adv, calls = _fake_advance(lambda lr, to: score_of(lr))
    monkeypatch.setattr(PS, "advance", adv)
    learn = _learner()
    res = A.auto_lr_max(learn, budget=1.0, n_epoch=6)
    return res, calls


def test_the_duel_picks_its_lowest_score_around_the_probes_pick(monkeypatch):
    scores = {0.316: 0.2, 0.1: 0.3, 0.032: 0.4}
    res, calls = _duel_with(monkeypatch, lambda lr: scores[round(lr, 3)])
    assert sorted(round(lr, 4) for lr, _ in calls) == [0.0316, 0.1, 0.3162]
    assert math.isclose(res.lr_max, 10**-0.5) and res.trained and len(res.prefixes) == 3


@pytest.mark.parametrize("score", [0.7, math.inf])
def test_a_duel_where_nothing_trained_or_everything_diverged_keeps_the_probes_pick(
    monkeypatch, score
):
    monkeypatch.setattr(PS, "held_loss", lambda learn, held: 0.7)  # the model as it is
    res, _ = _duel_with(monkeypatch, lambda lr: score)
    assert math.isclose(res.lr_max, 0.1) and res.prefixes == [] and res.held_batches == 0
    assert ("none trained" if score == 0.7 else "all diverged") in res.reason
    assert "the probes' pick stands" in res.reason


def test_a_resumed_duel_run_reads_its_pick_and_split_and_ends_on_the_whole_runs_weights(
    tmp_path, monkeypatch
):
    whole = _learner()
    whole.fit_one_cycle(6, "auto", auto_budget=1.0)
    rung = whole.auto_result.rungs[0]
    learn = _learner()
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(6, "auto", auto_budget=1.0,
                            cbs=[Checkpoint(tmp_path, every=10), _Stop(rung + 20)])  # fmt: skip
    monkeypatch.setattr(A, "auto_lr_max", lambda *a, **k: pytest.fail("searched again"))
    again = _learner()
    again.fit_one_cycle(6, "auto", auto_budget=1.0, cbs=[Checkpoint(tmp_path, every=10)],
                        resume="auto")  # fmt: skip
    assert again.auto_result.lr_max == whole.auto_result.lr_max
    assert again.auto_result.held_batches == whole.auto_result.held_batches > 0
    for a, b in zip(whole.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
