"""The Scheduler: param groups, Adam's beta1, any key, state round-trip, holding past the
end, and the LRScheduler face in a plain torch loop."""

import io
import logging
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onecycle import ConfigError, ScheduleLR, Scheduler
from onecycle.schedules import const, cos, lin, one_cycle, one_cycle_moms, sample


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _train(opt, sched, model, steps, trace):
    torch.manual_seed(1)
    for _ in range(steps):
        g = opt.param_groups
        trace.append(
            [(x["lr"], x.get("momentum", x.get("betas", (None,))[0]), x["weight_decay"]) for x in g]
        )
        loss = model(torch.randn(16, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "opt_cls",
    [
        torch.optim.SGD,
        torch.optim.AdamW,
        torch.optim.NAdam,
        torch.optim.RAdam,
        torch.optim.RMSprop,
        torch.optim.Adam,
    ],
)
def test_momentum_reaches_every_optimizer_family(opt_cls):
    kw = {"momentum": 0.9} if opt_cls in (torch.optim.SGD, torch.optim.RMSprop) else {}
    opt = opt_cls(_model().parameters(), lr=1e-3, **kw)
    Scheduler(opt, {"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, 10)
    g = opt.param_groups[0]
    assert (g["momentum"] if "momentum" in g else g["betas"][0]) == 0.95
    if "betas" in g:
        assert g["betas"][1] == 0.999  # beta2 untouched


def test_momentum_on_an_optimizer_without_it_is_refused():
    opt = torch.optim.Adagrad(_model().parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="momentum"):
        Scheduler(opt, {"momentum": one_cycle_moms()}, 10)


def test_unknown_key_is_refused_naming_the_allowed_ones():
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"lrate.*'lr'"):
        Scheduler(opt, {"lrate": const(0.1)}, 10)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 2.5}, "total_steps"),
        ({"total_steps": True}, "total_steps"),
    ],
)
def test_bad_total_steps(kwargs, name):
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=name):
        Scheduler(opt, {"lr": const(0.1)}, **kwargs)


def test_per_group_schedules_and_weight_decay():
    m = _model()
    opt = torch.optim.SGD(
        [{"params": m[0].parameters()}, {"params": m[2].parameters()}],
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
    )
    with pytest.raises(ConfigError, match="one per param group"):
        Scheduler(opt, {"lr": [one_cycle(0.1)] * 3}, 10)
    sched = Scheduler(
        opt, {"lr": [one_cycle(0.01), one_cycle(0.1)], "weight_decay": lin(1e-4, 0.0)}, 5
    )
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0004, 0.004])
    trace = []
    _train(opt, sched, m, 5, trace)
    assert [t[1][0] for t in trace] == pytest.approx(sample(one_cycle(0.1), 5))
    assert [t[0][0] for t in trace] == pytest.approx(sample(one_cycle(0.01), 5))
    assert [t[0][2] for t in trace] == pytest.approx([1e-4, 7.5e-5, 5e-5, 2.5e-5, 0.0])


def test_step_zero_uses_the_start_value_and_the_last_step_the_end_value():
    opt = torch.optim.SGD(_model().parameters(), lr=123.0, momentum=0.5)
    sched = Scheduler(opt, {"lr": one_cycle(1.0), "momentum": one_cycle_moms()}, 7)
    assert opt.param_groups[0]["lr"] == 0.04 and opt.param_groups[0]["momentum"] == 0.95
    for _ in range(6):
        sched.step()
    assert opt.param_groups[0]["lr"] == 1e-5


def test_past_the_end_it_holds_and_logs_once(caplog):
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    sched = Scheduler(opt, {"lr": lin(1.0, 0.5)}, 3)
    with caplog.at_level(logging.INFO, logger="onecycle.scheduler"):
        for _ in range(3):  # the call after the last of 3 steps is still in time
            sched.step()
        assert not caplog.records
        for _ in range(7):
            sched.step()
    assert opt.param_groups[0]["lr"] == 0.5
    assert sum("past total_steps" in r.message for r in caplog.records) == 1


@settings(max_examples=25, deadline=None)
@given(k=st.integers(0, 40), opt_name=st.sampled_from(["sgd", "adamw"]))
def test_state_round_trip_resumes_exactly(k, opt_name):
    total = 40

    def make():
        m = _model()
        if opt_name == "sgd":
            o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        else:
            o = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=1e-2)
        s = Scheduler(
            o,
            {"lr": one_cycle(0.05), "momentum": one_cycle_moms(), "weight_decay": cos(1e-4, 1e-5)},
            total,
        )
        return m, o, s

    m, o, s = make()
    full = []
    _train(o, s, m, total + 3, full)

    m1, o1, s1 = make()
    first = []
    _train(o1, s1, m1, k, first)
    buf = io.BytesIO()
    torch.save({"sched": s1.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["sched"]
    _m2, o2, s2 = make()
    s2.load_state_dict(state)
    second = []
    torch.manual_seed(1)
    # continue with the same hyper-parameter trace (data differs; we compare the schedule)
    for _ in range(total + 3 - k):
        second.append(
            [
                (x["lr"], x.get("momentum", x.get("betas", (None,))[0]), x["weight_decay"])
                for x in o2.param_groups
            ]
        )
        o2.step()
        s2.step()
    assert first + second == full  # exact, not approximate


def test_schedule_lr_in_a_plain_torch_loop_and_resume_in_either_order():
    total = 30

    def run(steps, state=None, load_first=False):
        m = _model()
        o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        if state is not None and load_first:
            o.load_state_dict(state["opt"])
        s = ScheduleLR(o, {"lr": one_cycle(0.5), "momentum": one_cycle_moms()}, total)
        if state is not None:
            if not load_first:
                o.load_state_dict(state["opt"])
            s.load_state_dict(state["sched"])
        lrs = []
        for _ in range(steps):
            lrs.append((o.param_groups[0]["lr"], o.param_groups[0]["momentum"]))
            o.step()
            s.step()
        return lrs, {"opt": o.state_dict(), "sched": s.state_dict()}

    full, _ = run(total)
    assert [x[0] for x in full] == pytest.approx(sample(one_cycle(0.5), total), rel=1e-12)
    head, state = run(12)
    buf = io.BytesIO()
    torch.save(state, buf)
    for load_first in (False, True):
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        tail, _ = run(total - 12, loaded, load_first)
        assert head + tail == full


def test_schedule_lr_holds_past_the_end_instead_of_raising():
    o = torch.optim.SGD(_model().parameters(), lr=0.1)
    s = ScheduleLR(o, {"lr": one_cycle(1.0)}, 5)
    for _ in range(20):
        o.step()
        s.step()
    assert s.get_last_lr() == [pytest.approx(1e-5)]


def test_random_order_queries_are_pure():
    o = torch.optim.SGD(_model().parameters(), lr=0.1, momentum=0.9)
    s = Scheduler(o, {"lr": one_cycle(1.0), "momentum": one_cycle_moms()}, 50)
    steps = list(range(60))
    ref = {i: s.values_at(i) for i in steps}
    random.Random(0).shuffle(steps)
    assert all(s.values_at(i) == ref[i] for i in steps)
    assert s.step_count == 0


def test_values_beyond_float32_are_refused_at_construction():
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="float32"):
        Scheduler(opt, {"lr": one_cycle(1e39)}, 10_000)  # the peak, mid-run, not step 0
