"""Properties of the schedules: start/peak/end values, continuity, bounds, monotone
phases, momentum against the LR, purity, pickling; and every validation case."""

import itertools
import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecycle import schedules as S
from onecycle.errors import ConfigError

GRID = [i / 400 for i in range(401)]

one_cycle_args = st.fixed_dictionaries(
    {
        "lr_max": st.floats(1e-5, 10.0),
        "div": st.floats(1.0, 1000.0),
        "div_final": st.floats(1.0, 1e6),
        "pct_start": st.floats(0.01, 0.99),
        "anneal": st.sampled_from(["cos", "linear"]),
    }
)


@settings(max_examples=150, deadline=None)
@given(a=one_cycle_args)
def test_one_cycle_two_phase_properties(a):
    s = S.one_cycle(**a)
    lr_max, p = a["lr_max"], a["pct_start"]
    lo, end = lr_max / a["div"], lr_max / a["div_final"]
    assert s(0.0) == pytest.approx(lo, rel=1e-12)
    assert s(p) == pytest.approx(lr_max, rel=1e-12)
    assert s(1.0) == pytest.approx(end, rel=1e-12)
    vals = [s(t) for t in GRID]
    assert all(
        math.isfinite(v) and min(lo, end) * (1 - 1e-12) <= v <= lr_max * (1 + 1e-12) for v in vals
    )
    up = [s(t) for t in GRID if t <= p] + [lr_max]
    down = [lr_max] + [s(t) for t in GRID if t >= p]
    assert all(x <= y * (1 + 1e-12) for x, y in itertools.pairwise(up))  # non-decreasing warm-up
    assert all(x >= y * (1 - 1e-12) for x, y in itertools.pairwise(down))  # non-increasing anneal
    # continuity at the join: the step across the peak is no bigger than the phases' slopes
    eps = 1e-9
    assert abs(s(p - eps) - s(p + eps)) <= lr_max * 1e-6


@settings(max_examples=100, deadline=None)
@given(a=one_cycle_args)
def test_one_cycle_three_phase_properties(a):
    a = dict(a, pct_start=min(a["pct_start"], 0.5), three_phase=True)
    s = S.one_cycle(**a)
    p, lr_max = a["pct_start"], a["lr_max"]
    lo = lr_max / a["div"]
    assert s(p) == pytest.approx(lr_max, rel=1e-12)
    assert s(2 * p) == pytest.approx(lo, rel=1e-9)
    assert s(1.0) == pytest.approx(lr_max / a["div_final"] if p < 0.5 else lo, rel=1e-12)
    assert abs(s(2 * p - 1e-9) - s(2 * p + 1e-9)) <= lr_max * 1e-6


@settings(max_examples=100, deadline=None)
@given(
    p=st.floats(0.05, 0.95),
    anneal=st.sampled_from(["cos", "linear"]),
    hi=st.floats(0.86, 0.99),
    lo=st.floats(0.5, 0.85),
)
def test_momentum_moves_against_the_lr(p, anneal, hi, lo):
    lr = S.one_cycle(1.0, 25.0, 1e4, p, anneal)
    mom = S.one_cycle_moms((hi, lo, hi), p, anneal)
    assert mom(0.0) == hi and mom(1.0) == pytest.approx(hi) and mom(p) == pytest.approx(lo)
    for t0, t1 in itertools.pairwise(GRID):
        if t0 < p < t1:
            continue  # this interval holds the turn: each moves both ways inside it
        d_lr, d_mom = lr(t1) - lr(t0), mom(t1) - mom(t0)
        assert d_lr * d_mom <= 1e-15  # never both up or both down


@settings(max_examples=100, deadline=None)
@given(
    base=st.floats(1e-4, 1.0),
    span=st.floats(1.1, 100.0),
    step=st.integers(1, 50),
    cycles=st.integers(1, 5),
)
def test_clr_properties(base, span, step, cycles):
    total = 2 * step * cycles + 1
    max_lr = base * span
    tri = S.triangular(base, max_lr, step, total)
    tri2 = S.triangular2(base, max_lr, step, total)
    at = lambda s, i: s(i / (total - 1))  # noqa: E731
    for c in range(cycles):
        start, peak = 2 * step * c, 2 * step * c + step
        assert at(tri, start) == pytest.approx(base, rel=1e-12)
        assert at(tri, peak) == pytest.approx(max_lr, rel=1e-12)
        assert at(tri2, peak) == pytest.approx(base + (max_lr - base) / 2**c, rel=1e-9)
    vals = [at(tri, i) for i in range(total)]
    assert all(base * (1 - 1e-12) <= v <= max_lr * (1 + 1e-12) for v in vals)
    # periodic with period 2 * step_size
    for i in range(total - 2 * step):
        assert at(tri, i) == pytest.approx(at(tri, i + 2 * step), rel=1e-9)


def test_fixed_schedules():
    assert S.sample(S.step_decay(1.0, 0.1, (0.5,)), 5) == [1.0, 1.0, 0.1, 0.1, 0.1]
    td = S.time_decay(1.0, 0.25)
    assert td(0.0) == 1.0 and td(1.0) == pytest.approx(0.25) and td(0.5) == pytest.approx(0.4)
    ed = S.exp_decay(1.0, 1e-3)
    assert ed(1 / 3) == pytest.approx(0.1) and ed(1.0) == 1e-3
    sg = S.sgdr(1.0, 0.1, n_cycles=3, cycle_mult=2.0)  # cycles of 1/7, 2/7, 4/7
    assert sg(0.0) == 1.0 and sg(1 / 7) == 1.0 and sg(3 / 7) == 1.0
    assert sg(1 / 7 - 1e-12) == pytest.approx(0.1, abs=1e-6)
    assert sg(1.0) == pytest.approx(0.1)
    w = S.warmup(S.const(0.5), pct=0.1)
    assert w(0.0) == 0.0 and w(0.05) == pytest.approx(0.25) and w(0.5) == 0.5


def test_schedules_are_pure_picklable_equal_and_clamped():
    s = S.one_cycle(0.3, three_phase=True, pct_start=0.3)
    first = [s(t) for t in GRID]
    assert [s(t) for t in reversed(GRID)] == list(reversed(first))  # no hidden state
    t = pickle.loads(pickle.dumps(s))
    assert t == s and [t(x) for x in GRID] == first
    assert S.one_cycle(0.3) != S.one_cycle(0.4)
    assert "Join(" in repr(s) and "Cos(start=" in repr(s)
    assert s(-1.0) == s(0.0) and s(2.0) == s(1.0)


def test_sample_previews_without_an_optimizer():
    vals = S.sample(S.one_cycle(1.0, pct_start=0.5, anneal="linear", div=10, div_final=10), 5)
    assert vals == pytest.approx([0.1, 0.55, 1.0, 0.55, 0.1])


# --- validation: every invalid parameter names itself, its value and what is allowed ----------

BAD = [
    ("lr_max", lambda: S.one_cycle(0.0)),
    ("lr_max", lambda: S.one_cycle(-1.0)),
    ("lr_max", lambda: S.one_cycle(float("nan"))),
    ("lr_max", lambda: S.one_cycle(float("inf"))),
    ("lr_max", lambda: S.one_cycle("0.1")),
    ("lr_max", lambda: S.one_cycle(True)),
    ("pct_start", lambda: S.one_cycle(0.1, pct_start=0.0)),
    ("pct_start", lambda: S.one_cycle(0.1, pct_start=1.0)),
    ("pct_start", lambda: S.one_cycle(0.1, pct_start=float("nan"))),
    ("pct_start", lambda: S.one_cycle(0.1, pct_start=0.6, three_phase=True)),
    ("pct_start", lambda: S.one_cycle_moms(pct_start=-0.1)),
    ("div", lambda: S.one_cycle(0.1, div=0.0)),
    ("div", lambda: S.one_cycle(0.1, div=-2.0)),
    ("div_final", lambda: S.one_cycle(0.1, div_final=0.5)),
    ("div_final", lambda: S.one_cycle(0.1, div_final=0.0)),
    ("anneal", lambda: S.one_cycle(0.1, anneal="cosine")),
    ("moms", lambda: S.one_cycle_moms((0.95, 0.85))),
    ("moms", lambda: S.one_cycle_moms((0.95, 1.5, 0.95))),
    ("step_size", lambda: S.triangular(0.1, 1.0, 0, 100)),
    ("step_size", lambda: S.triangular(0.1, 1.0, 2.5, 100)),
    ("total_steps", lambda: S.triangular2(0.1, 1.0, 10, 0)),
    ("max_lr", lambda: S.triangular(1.0, 0.1, 10, 100)),
    ("base_lr", lambda: S.triangular(-1.0, 0.1, 10, 100)),
    ("gamma", lambda: S.exp_range(0.1, 1.0, 10, 100, gamma=0.0)),
    ("gamma", lambda: S.exp_range(0.1, 1.0, 10, 100, gamma=-0.5)),
    ("gamma", lambda: S.step_decay(0.1, gamma=0.0)),
    ("milestones", lambda: S.step_decay(0.1, milestones=(0.75, 0.5))),
    ("cycle_mult", lambda: S.sgdr(0.1, cycle_mult=0.5)),
    ("n_cycles", lambda: S.sgdr(0.1, n_cycles=0)),
    ("lr_min", lambda: S.sgdr(0.1, lr_min=0.2)),
    ("pcts", lambda: S.join([S.const(1), S.const(2)], [0.5, 0.6])),
    ("pcts", lambda: S.join([S.const(1), S.const(2)], [1.0])),
    ("start", lambda: S.exp(0.0, 1.0)),
    ("n", lambda: S.sample(S.const(1.0), 0)),
]


@pytest.mark.parametrize("name,make", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_invalid_parameters_raise_a_clear_error(name, make):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.name.startswith(name)
    msg = str(e.value)
    assert msg.startswith(f"{e.value.name}=") and "expected" in msg
    assert isinstance(e.value, ValueError)


def test_step_decay_refuses_a_gamma_that_overflows_its_start():
    # found by the fuzz test: start * gamma past the largest float was inf after a milestone
    with pytest.raises(ConfigError, match="gamma"):
        S.step_decay(1.4e154, gamma=1.4e154, milestones=(0.5,))
    assert S.step_decay(1e3, gamma=10.0, milestones=(0.5,))(0.9) == pytest.approx(1e4)
