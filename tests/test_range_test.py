"""The LR range test: exact restore, stopping, sweeps, ratios, suggestions on curves with
known answers, lr_max="auto"."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import ConfigError, Learner, accuracy
from onecycle.data import Loader
from onecycle.range_test import Step, range_test
from onecycle.suggest import suggest


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, :4].sum(1) > 0).long()


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2)
    )


def _snapshot(model, opt, loader):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        str(opt.state_dict()["param_groups"]),
        {
            k: {n: t.clone() for n, t in s.items() if torch.is_tensor(t)}
            for k, s in opt.state_dict()["state"].items()
        },
        torch.get_rng_state(),
        np.random.get_state()[1].copy(),
        random.getstate(),
        loader.state_dict(),
        model.training,
    )


def _assert_same(a, b):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    assert a[1] == b[1]
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        for n in a[2][k]:
            assert torch.equal(a[2][k][n], b[2][k][n]), (k, n)
    assert torch.equal(a[3], b[3]) and np.array_equal(a[4], b[4]) and a[5] == b[5]
    assert a[6] == b[6] and a[7] == b[7]


def _trained(opt_name):
    x, y = _data()
    model = _model()
    if opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = Loader(x, y, 64, seed=3)
    it = iter(loader)
    for _ in range(3):  # some optimizer state and a loader mid-epoch
        xb, yb = next(it)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        opt.zero_grad()
    return model, opt, loader


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_everything_is_restored_bit_exactly(opt_name):
    model, opt, loader = _trained(opt_name)
    torch.manual_seed(11)
    np.random.seed(5)
    random.seed(7)
    model.eval()
    before = _snapshot(model, opt, loader)
    res = range_test(model, opt, F.cross_entropy, loader, num_it=50)
    assert len(res.lrs) > 10
    _assert_same(before, _snapshot(model, opt, loader))


def test_restored_after_divergence_and_after_an_exception():
    model, opt, loader = _trained("sgd")
    before = _snapshot(model, opt, loader)
    res = range_test(model, opt, F.cross_entropy, loader, start_lr=1e-3, end_lr=1e4, num_it=200)
    assert res.stop_reason.startswith(("diverged", "non-finite")) and len(res.lrs) < 200
    _assert_same(before, _snapshot(model, opt, loader))

    calls = {"n": 0}

    def failing(pred, y):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("boom")
        return F.cross_entropy(pred, y)

    with pytest.raises(RuntimeError, match="boom"):
        range_test(model, opt, failing, loader, num_it=20)
    _assert_same(before, _snapshot(model, opt, loader))


def test_a_run_after_lr_find_is_bit_identical_to_one_without():
    def run(with_lr_find):
        x, y = _data()
        learn = Learner(_model(), Loader(x, y, 64, seed=1), loss_func=F.cross_entropy)
        torch.manual_seed(123)
        if with_lr_find:
            learn.lr_find(num_it=40)
        learn.fit_one_cycle(2, 0.1)
        return learn.model.state_dict(), learn.recorder.losses

    (a, la), (b, lb) = run(False), run(True)
    assert la == lb
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_the_sweep(bad):
    model, opt, loader = _trained("sgd")
    calls = {"n": 0}

    def loss(pred, y):
        calls["n"] += 1
        out = F.cross_entropy(pred, y)
        return out * bad if calls["n"] == 30 else out

    res = range_test(model, opt, loss, loader, num_it=100)
    assert len(res.lrs) == 30 and "non-finite" in res.stop_reason
    assert not math.isfinite(res.losses[-1])


def test_negative_losses_still_stop_on_divergence():
    model, opt, loader = _trained("sgd")
    res = range_test(
        model,
        opt,
        lambda p, y: F.cross_entropy(p, y) - 10.0,
        loader,
        start_lr=1e-3,
        end_lr=1e4,
        num_it=200,
    )
    assert res.stop_reason.startswith(("diverged", "non-finite")) and len(res.lrs) < 200
    assert all(v < 0 for v in res.losses[:20])


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_sweeps_and_group_ratios(mode):
    model = _model()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.01},
            {"params": list(model[1].parameters()) + list(model[4].parameters()), "lr": 0.1},
        ],
        lr=0.1,
    )
    x, y = _data()
    res = range_test(
        model,
        opt,
        F.cross_entropy,
        Loader(x, y, 64),
        start_lr=1e-4,
        end_lr=1.0,
        num_it=20,
        mode=mode,
        stop_div=False,
    )
    t = [i / 19 for i in range(20)]
    expect = (
        [1e-4 * (1e4) ** ti for ti in t]
        if mode == "exp"
        else [1e-4 + (1.0 - 1e-4) * ti for ti in t]
    )
    assert res.lrs == pytest.approx(expect, rel=1e-9)
    assert res.group_ratios == pytest.approx([0.1, 1.0])
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]  # restored


def test_custom_step_accumulation_and_validation_curve():
    x, y = _data()
    dict_batches = [{"inp": x[i : i + 32], "target": y[i : i + 32]} for i in range(0, 512, 32)]
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = Step(lambda m, b: F.cross_entropy(m(b["inp"]), b["target"]))
    res = range_test(model, opt, step, dict_batches, num_it=10, accumulate=2, stop_div=False)
    assert len(res.losses) == 10
    res = range_test(
        model,
        opt,
        F.cross_entropy,
        Loader(x, y, 64),
        num_it=10,
        stop_div=False,
        valid_batches=[(x[:128], y[:128])],
        metric=accuracy,
    )
    assert len(res.valid_losses) == len(res.valid_metrics) == 10
    assert all(0.0 <= a <= 1.0 for a in res.valid_metrics)


def _curve(n=100, noise=0.0, seed=0, drop=2.0, diverge=True):
    rng = np.random.default_rng(seed)
    lrs = [10 ** (-6 + 7 * i / (n - 1)) for i in range(n)]
    out = []
    for lr in lrs:
        x = math.log10(lr)
        v = 2.3 - drop / (1 + math.exp(-(x + 2.5) * 3))
        if diverge and x > -0.5:
            v += 10 * (x + 0.5) ** 2
        out.append(v + noise * rng.standard_normal())
    return lrs, out


def test_suggestions_on_a_known_curve():
    lrs, loss = _curve(noise=0.01)
    a = suggest(lrs, loss, "diverged")
    s = a.suggestions
    assert math.log10(s["steep"].lr) == pytest.approx(-2.5, abs=0.25)  # inflection at 10^-2.5
    lo, hi = s["clr_bounds"].bounds
    assert -3.6 < math.log10(lo) < -3.0 and -1.8 < math.log10(hi) < -0.5
    assert s["clr_bounds"].lr <= a.recommended.lr < 0.3  # the valley's bottom, before the rise
    assert s["minimum"].lr < a.recommended.lr
    assert all(v.lr is not None for v in s.values())


def test_flat_noisy_and_short_curves_give_none_with_a_reason():
    lrs, _ = _curve()
    rng = np.random.default_rng(1)
    flat = [2.3 + 1e-4 * rng.standard_normal() for _ in lrs]
    a = suggest(lrs, flat, "completed 100 steps")
    assert a.recommended is None and all(v.lr is None for v in a.suggestions.values())
    assert (
        "too flat" in a.suggestions["valley"].reason
        or "too noisy" in a.suggestions["valley"].reason
    )
    lrs, noisy = _curve(noise=0.8, drop=0.2, diverge=False)
    a = suggest(lrs, noisy, "completed 100 steps")
    assert a.recommended is None
    assert "too noisy" in a.suggestions["steep"].reason
    a = suggest(lrs[:8], noisy[:8], "diverged")
    assert a.recommended is None and "too short" in a.suggestions["minimum"].reason


def test_still_falling_at_the_end_gives_no_minimum():
    lrs, loss = _curve(diverge=False)
    a = suggest(lrs[:70], loss[:70], "completed 70 steps")  # sweep ends inside the descent
    assert (
        a.suggestions["minimum"].lr is None and "still falling" in a.suggestions["minimum"].reason
    )
    assert a.recommended is None


def test_lr_max_auto_end_to_end(caplog):
    x, y = _data(1024)
    learn = Learner(
        _model(),
        Loader(x, y, 64, seed=0),
        Loader(x, y, 256, shuffle=False),
        loss_func=F.cross_entropy,
        metrics=[accuracy],
    )
    with caplog.at_level("INFO", logger="onecycle"):
        learn.fit_one_cycle(20, lr_max="auto")  # 320 steps: room for a sweep and probes
    assert any("lr_max=auto" in r.message for r in caplog.records)
    rec = learn.auto_result.lr_max  # the probes' pick, between the sweep's candidates
    cands = learn.auto_result.candidates
    assert min(cands) <= rec <= max(cands) and learn.lr_find_result is not None
    assert max(learn.recorder.lrs) == pytest.approx(rec, rel=1e-3)  # peak between two steps
    assert learn.recorder.rows[-1]["accuracy"] > 0.85


def test_lr_max_auto_on_garbage_says_what_it_did_instead_of_refusing():
    x = torch.zeros(256, 8)  # no signal in the inputs: the loss cannot fall below chance
    y = torch.arange(256) % 2
    learn = Learner(_model(), Loader(x, y, 64), loss_func=F.cross_entropy)
    learn.fit_one_cycle(1, lr_max="auto")  # 4 steps: no room to search (v6 never refuses
    auto = learn.auto_result  # a model that trains, and cannot tell that this one won't)
    assert auto.lr_max is not None and "no room" in auto.reason and auto.compute_ratio <= 0.3


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"start_lr": 0}, "start_lr"),
        ({"end_lr": 1e-8}, "end_lr"),
        ({"num_it": 3}, "num_it"),
        ({"mode": "log"}, "mode"),
        ({"smooth": 1.0}, "smooth"),
        ({"div_factor": 1.0}, "div_factor"),
        ({"accumulate": 0}, "accumulate"),
    ],
)
def test_range_test_validation(kw, name):
    model = _model()
    with pytest.raises(ConfigError) as e:
        range_test(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            F.cross_entropy,
            [(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))],
            **kw,
        )
    assert e.value.name == name


def test_recommendation_keeps_clear_of_a_cliff():
    """SGD-like curve: the valley's bottom sits right at the divergence."""
    lrs = [10 ** (-5 + 6 * i / 99) for i in range(100)]
    loss = []
    for lr in lrs:
        x = math.log10(lr)
        v = 2.3 - 0.3 / (1 + math.exp(-(x + 0.6) * 6))  # falls around 0.25
        loss.append(v + (50 * (x + 0.25) if x > -0.25 else 0.0))  # blows up at ~0.56
    a = suggest(lrs, loss, "diverged", adaptive=True)
    upper = a.suggestions["clr_bounds"].lr
    assert suggest(lrs, loss, "diverged").recommended.lr < a.recommended.lr  # SGD: further
    blow_up = next(lr for lr, v in zip(lrs, loss) if lr > 0.1 and v > 2.3 * 1.005)  # start + 0.5%
    assert a.recommended.lr == pytest.approx(blow_up / 2.5)
    assert a.recommended.lr < upper
    assert "divergence" in a.recommended.reason
