"""lr_max="auto" / wd="auto": one update rule, robust reading, probes that restore and
respect their budget (onecycle.auto)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Callback, GradientAccumulation, GradientClip, Learner, accuracy, sgd
from onecycle.auto import auto_lr_max, candidates, lr_sweep, probe, wd_range_test
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.range_test import RangeTestResult
from onecycle.suggest import suggest


def _data(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, :4].sum(1) > 0).long()


def _learner(wd: float = 0.0, cbs: tuple = (), bn: bool = False, **kw) -> Learner:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(8, 32)]
    if bn:
        layers.append(nn.BatchNorm1d(32))
    layers += [nn.ReLU(), nn.Linear(32, 2)]
    x, y = _data()
    return Learner(nn.Sequential(*layers), Loader(x, y, 32, seed=0), Loader(x, y, 256),
                   loss_func=F.cross_entropy, metrics=[accuracy], wd=wd, cbs=cbs,
                   **kw)  # fmt: skip


class _Spy(Callback):
    """Records what each optimizer step used (and runs in side runs: affects_update)."""

    affects_update = True

    def __init__(self) -> None:
        self.moms: list[float] = []
        self.losses: list[float] = []
        self.micro = 0

    def after_loss(self, learn: Learner) -> None:
        self.micro += 1

    def after_step(self, learn: Learner) -> None:
        self.moms.append(float(learn.opt.param_groups[0]["momentum"]))


# --- 1. one update rule ---------------------------------------------------------------------------


def test_sweep_applies_the_learners_weight_decay():
    a = _learner(wd=0.0).lr_find(num_it=30, stop_div=False)
    b = _learner(wd=10.0).lr_find(num_it=30, stop_div=False)
    assert a.losses[0] == b.losses[0]  # the same first batch, before any update
    assert a.losses[5:] != b.losses[5:]  # wd=10 changes the trajectory (it did not before)


def test_sweep_step_equals_a_hand_written_step_with_wd_clip_and_peak_momentum():
    """The sweep's losses equal a hand-written loop that applies decoupled wd (not on
    biases), gradient clipping and SGD with momentum 0.85 at the sweep's LRs."""
    learn = _learner(wd=0.1, cbs=(GradientClip(0.5),))
    init = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = learn.lr_find(start_lr=1e-3, end_lr=1.0, num_it=12, stop_div=False)
    assert res.stop_reason == "completed 12 steps"

    model = _learner().model
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.85, nesterov=True)
    x, y = _data()
    batches = iter(Loader(x, y, 32, seed=0))
    losses = []
    for lr in res.lrs:
        xb, yb = next(batches)
        loss = F.cross_entropy(model(xb), yb)
        losses.append(float(loss.detach()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.mul_(1 - lr * 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad()
    np.testing.assert_allclose(res.losses, losses, rtol=1e-6, atol=1e-7)


def test_sweep_holds_momentum_at_one_cycles_peak_value_and_restores_it():
    spy = _Spy()
    learn = _learner(cbs=(spy,), moms=(0.95, 0.8, 0.95))
    learn._make_opt([0.1])
    learn.lr_find(num_it=20)
    assert spy.moms and set(spy.moms) == {0.8}
    assert learn.opt.param_groups[0]["momentum"] == 0.9  # sgd()'s own value, restored


def test_sweep_runs_accumulation_from_callbacks_and_skips_loggers():
    class Logger(Callback):  # affects_update is False: never sees a side run
        calls = 0

        def after_step(self, learn: Learner) -> None:
            Logger.calls += 1

    spy = _Spy()
    learn = _learner(cbs=(spy, Logger(), GradientAccumulation(3)))
    res = learn.lr_find(num_it=10, stop_div=False)
    assert len(res.lrs) == 10 and spy.micro == 30
    assert Logger.calls == 0 and learn.recorder.losses == []


def test_lr_find_restores_the_learner_exactly():
    learn = _learner(bn=True, wd=1e-2)
    learn._make_opt([0.05])
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_state = learn.opt.state_dict()
    rng = torch.get_rng_state()
    cbs = list(learn.cbs)
    learn.lr_find(num_it=40)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    assert learn.opt.state_dict()["param_groups"] == opt_state["param_groups"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert learn.cbs == cbs and learn.valid_data is not None and learn.scheduler is None


def test_metric_without_validation_batches_is_refused():
    with pytest.raises(Exception, match="metric"):
        _learner().lr_find(num_it=10, metric=accuracy)


def test_validation_curve_through_the_loop():
    learn = _learner()
    x, y = _data(256, seed=1)
    res = learn.lr_find(num_it=15, stop_div=False, valid_batches=Loader(x, y, 128),
                        metric=accuracy)  # fmt: skip
    assert len(res.valid_losses) == len(res.valid_metrics) == 15
    assert all(0 <= m <= 1 for m in res.valid_metrics)


# --- 2. the reading -------------------------------------------------------------------------------


def _curve(spike: bool = False, noise: float = 0.0, late: bool = False) -> tuple[list, list]:
    rnd = random.Random(0)
    lrs = [10 ** (-6 + 7 * i / 99) for i in range(100)]
    out = []
    for lr in lrs:
        x = math.log10(lr)
        v = 2.3 - 1.6 / (1 + math.exp(-(x + 2.5) * 3))  # falls between 1e-3.5 and 1e-1.5
        if spike and -1.6 < x < -1.3:
            v += 1.5  # a catapult spike at ~0.03 that recovers
        if not late and x > 0.3:
            v += 3 * (x - 0.3) ** 2 * 10  # the real blow-up past ~2
        if late and x > 0.9:
            v += 20
        out.append(v + rnd.gauss(0, noise))
    return lrs, out


def test_reading_passes_a_transient_spike_that_recovers():
    lrs, losses = _curve(spike=True)
    a = suggest(lrs, losses, "completed 100 steps")
    assert a.recommended is not None and a.recommended.lr > 0.1  # read past the spike at 0.03
    valid = [i for i, v in enumerate(a.curve) if v == v]
    assert lrs[valid[-1]] > 1.0  # the window ends at the real blow-up, not the spike


def test_reading_passes_a_decade_long_catapult_that_recovers():
    """Fashion-MNIST's batch-norm CNN under SGD (60-step sweep): the loss climbs to 4x its
    start between 0.04 and 0.4, comes back below it, and blows up only past 2."""
    lrs = [10 ** (-6 + 7 * i / 59) for i in range(60)]
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        v = 2.3 - 1.5 / (1 + math.exp(-(x + 2.3) * 4))
        if -1.4 < x < -0.4:
            v += 7.0 * math.sin(math.pi * (x + 1.4))  # the catapult, up to ~9
        if x > 0.3:
            v += 30 * (x - 0.3)
        losses.append(v)
    a = suggest(lrs, losses, "diverged at lr=4.41 (smoothed loss > 4x best)")
    valid = [i for i, v in enumerate(a.curve) if v == v]
    assert lrs[valid[-1]] > 1.0  # read past the catapult to the real blow-up
    res = RangeTestResult(lrs, losses, losses, "diverged", "exp", [1.0])
    res.suggestions, res.recommended, res.analysis_curve = a.suggestions, a.recommended, a.curve
    assert 0.1 in [round(c, 6) for c in candidates(res)]  # where 1cycle trains best


def test_reading_a_noisy_flat_bottom_still_recommends():
    lrs, losses = _curve(noise=0.03)
    a = suggest(lrs, losses, "completed 100 steps")
    assert a.recommended is not None and 1e-2 < a.recommended.lr < 2


def test_reading_cuts_a_late_blow_up():
    lrs, losses = _curve(late=True)
    a = suggest(lrs, losses, "completed 100 steps")
    valid = [i for i, v in enumerate(a.curve) if v == v]
    assert 5 < lrs[valid[-1]] < 10  # cut where the loss jumps, two points before the end
    assert a.recommended is not None and a.recommended.lr < 5


def test_candidates_span_from_below_the_bottom_to_half_the_blow_up():
    lrs, losses = _curve(spike=True)
    a = suggest(lrs, losses, "completed 100 steps")
    res = RangeTestResult(lrs, losses, losses, "completed 100 steps", "exp", [1.0])
    res.suggestions, res.recommended, res.analysis_curve = a.suggestions, a.recommended, a.curve
    c = candidates(res)
    assert len(c) == 3 and c == sorted(c, reverse=True)
    assert all(math.isclose(c[i] / c[i + 1], math.sqrt(10)) for i in range(len(c) - 1))
    assert c[0] <= max(lrs) / 2


# --- 3. probes ------------------------------------------------------------------------------------


def test_probe_is_deterministic_and_restores_everything():
    learn = _learner(bn=True)
    learn._make_opt([0.01])
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    loader_state = learn.train_data.state_dict()
    a = probe(learn, 0.3, 20)
    b = probe(learn, 0.3, 20)
    assert a == b and math.isfinite(a.loss)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    assert learn.train_data.state_dict() == loader_state
    assert learn.opt.param_groups[0]["lr"] == 0.01 and learn.recorder.losses == []


def _rows(batches: list[torch.Tensor]) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for b in batches for r in b}


def test_probe_never_trains_on_its_held_back_samples_in_any_epoch():
    seen: list[torch.Tensor] = []

    class Batches(Callback):
        affects_update = True

        def after_loss(self, learn: Learner) -> None:
            seen.append(learn.batch[0])

    learn = _learner(cbs=(Batches(),))
    p = probe(learn, 0.1, 100)  # three epochs of the 29 batches left
    x, y = _data()
    held = _rows([xb for xb, _ in Loader(x, y, 32, seed=0)][:3])  # 32 batches: 3 held back
    assert p.steps == 100 and len(seen) == 100 and len(held) == 96
    trained = _rows(seen)
    assert trained.isdisjoint(held)  # before: epochs 2 and 3 drew these samples again
    assert len(trained) == 1024 - 96  # and everything else was trained on


def test_probe_on_a_plain_iterable_holds_back_its_first_batches():
    seen: list[torch.Tensor] = []

    class Batches(Callback):
        affects_update = True

        def after_loss(self, learn: Learner) -> None:
            seen.append(learn.batch[0])

    x, y = _data()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 1024, 32)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    learn = Learner(model, batches, loss_func=F.cross_entropy, cbs=[Batches()])
    p = probe(learn, 0.1, 10)
    assert p.steps == 10 and math.isfinite(p.loss)
    assert _rows(seen).isdisjoint(_rows([xb for xb, _ in batches[:3]]))


def test_probe_scores_a_diverging_lr_as_inf():
    assert probe(_learner(), 1e6, 10).loss == math.inf


def test_probe_scores_each_held_back_batch():
    p = probe(_learner(), 0.1, 20)
    assert len(p.batch_losses) == 3  # 32 batches: 3 held back, equal sizes
    assert p.loss == pytest.approx(sum(p.batch_losses) / 3)


LATTICE = [1.0, 10**-0.5, 0.1, 10**-1.5]


@pytest.mark.parametrize(
    "losses",
    [
        [3.0, 1.0, 1.05, 2.0],
        [3.0, 1.2, 1.0, 4.0],
        [2.0, 1.0, 1.9, 3.0],
        [3.0, 1.0, 3.0, 4.0],  # symmetric: stays
        [1.0, 1.0, 1.5, 3.0],
    ],
)
def test_between_moves_towards_the_neighbour_that_probed_nearly_as_well(losses):
    from onecycle.auto import between

    i = min(range(4), key=lambda j: losses[j])
    got = math.log10(between(LATTICE, losses))
    best = math.log10(LATTICE[i])
    if i in (0, 3):  # no bracket around the best: it stays
        assert got == best
        return
    up, down = losses[i - 1], losses[i + 1]  # the larger and the smaller LR
    assert abs(got - best) <= 0.25 + 1e-12  # within half a lattice step (0.5 decades)
    assert (got > best) == (up < down) and (got == best) == (up == down)
    # the closer the neighbour's probe, the further the pick moves towards it
    closer = list(losses)  # the next best neighbour half-way closer to the best
    closer[i + 1 if down <= up else i - 1] = (losses[i] + min(up, down)) / 2
    assert abs(math.log10(between(LATTICE, closer)) - best) > abs(got - best)


def test_between_next_to_a_diverged_probe_and_on_a_tie():
    from onecycle.auto import between

    assert between(LATTICE, [math.inf, 1.0, 1.01, 2.0]) == LATTICE[1]
    assert between(LATTICE, [math.nan, 1.0, 1.01, 2.0]) == LATTICE[1]  # NaN: as diverged
    with pytest.raises(ConfigError, match="lrs"):
        between([0.1, 1.0, 0.316], [3.0, 1.0, 2.0])  # not in the candidates' order
    # two neighbours probing alike: half-way between them (in log LR), whichever is first
    mid = math.sqrt(LATTICE[1] * LATTICE[2])
    assert between(LATTICE, [2.0, 1.0, 1.0, 2.0]) == pytest.approx(mid)


def test_fit_one_cycle_auto_trains_at_the_pick():
    learn = _learner()
    learn.fit_one_cycle(4, "auto")
    assert learn.auto_result is not None and learn.auto_result.lr_max is not None
    assert max(learn.recorder.lrs) == pytest.approx(learn.auto_result.lr_max, rel=1e-3)
    assert learn.recorder.rows[-1]["accuracy"] > 0.9


# --- 5. Smith's other sweeps ----------------------------------------------------------------------


def test_wd_auto_end_to_end():
    learn = _learner(wd=5e-4)
    learn.fit_one_cycle(3, 0.1, wd="auto")
    res = learn.auto_wd_result
    assert res is not None and res.wd in (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
    assert len(res.probes) == 5 and learn.opt.param_groups[0]["wd"] == res.wd
    assert learn.wd == 5e-4  # the Learner's default is left alone; this fit used the pick


def test_wd_range_test_prefers_no_decay_when_decay_is_absurd():
    res = wd_range_test(_learner(), 0.1, 1000, values=(0.0, 5.0))
    assert res.wd == 0.0


def test_momentum_range_test_returns_one_of_the_ranges():
    from onecycle.auto import momentum_range_test

    m, res = momentum_range_test(_learner(), 0.1, 1000)
    assert m in [(0.99, 0.9, 0.99), (0.95, 0.85, 0.95), (0.9, 0.8, 0.9), (0.85, 0.75, 0.85)]
    assert len(res.probes) == 4


def test_fine_tune_auto_picks_base_lr_on_the_frozen_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    x, y = _data()
    learn = Learner(
        model,
        Loader(x, y, 32),
        loss_func=F.cross_entropy,
        opt_func=sgd,
        splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())],
    )
    learn.fine_tune(2, base_lr="auto", freeze_epochs=1)
    assert learn.auto_result is not None and learn.auto_result.lr_max is not None
    ratios = [h[0] / h[1] for h in learn.recorder.hypers["lr"]]  # the unfrozen phase
    assert ratios == pytest.approx([0.01] * len(ratios))  # slice(base_lr / 2 / lr_mult, ...)
    # resuming keeps the run's own base_lr: a new pick would train a different run
    before = [p.requires_grad for p in learn.model.parameters()]
    with pytest.raises(ConfigError, match=r"base_lr.*when resuming"):
        learn.fine_tune(2, base_lr="auto", freeze_epochs=1, resume="auto")
    assert [p.requires_grad for p in learn.model.parameters()] == before  # nothing changed


def test_sweep_rejects_bad_options():
    with pytest.raises(Exception, match="end_lr"):
        lr_sweep(_learner(), start_lr=1.0, end_lr=0.1)
    with pytest.raises(Exception, match="budget"):
        auto_lr_max(_learner(), 100, budget=0)


def test_probe_on_a_loader_too_small_to_set_samples_aside_still_scores():
    x, y = _data(40)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    learn = Learner(model, Loader(x, y, 32, seed=0), loss_func=F.cross_entropy)
    p = probe(learn, 0.1, 3)  # 2 batches (32 + 8): the first is held back, as before
    assert p.steps == 3 and math.isfinite(p.loss)


def test_wd_auto_says_too_close_to_call_when_the_probes_cannot_be_told_apart(monkeypatch, caplog):
    import onecycle.auto as A
    import onecycle.sweeps as SW

    noise = {0.0: (0.20, 0.22, 0.21, 0.2133), 1e-4: (0.21, 0.21, 0.22, 0.2035)}

    def probe(learn, lr, steps, *, wd=None, **kw):  # 0.02% apart, well within the noise
        b = noise.get(wd, (0.5, 0.5, 0.5, 0.5))
        return A.ProbeResult(0.1, steps, sum(b) / 4, wd=wd, batch_losses=b)

    monkeypatch.setattr(SW, "probe", probe)
    res = A.wd_range_test(_learner(), 0.1, 1000, values=(0.0, 1e-4, 1e-2))
    assert res.wd == 0.0 and "too close to call" in res.reason
    assert any("too close to call" in r.message for r in caplog.records)
    noise[1e-4] = (0.31, 0.32, 0.33, 0.31)  # clearly worse: no doubt to report
    res = A.wd_range_test(_learner(), 0.1, 1000, values=(0.0, 1e-4, 1e-2))
    assert res.wd == 0.0 and "too close" not in res.reason
