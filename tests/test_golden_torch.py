"""Golden comparisons, step by step, against PyTorch's own OneCycleLR and CyclicLR.

Mapping of parameters (torch -> onecycle):

- ``OneCycleLR(max_lr, total_steps=T, pct_start=p, div_factor=d, final_div_factor=f,
  anneal_strategy=a, three_phase=tp, base_momentum=b, max_momentum=m)`` is
  ``one_cycle(max_lr, div=d, div_final=d * f, pct_start=p', anneal=a, three_phase=tp)`` with
  ``one_cycle_moms((m, b, m), ...)`` and ``p' = (p * T - 1) / (T - 1)``.
  torch's final LR is ``initial_lr / final_div_factor``, ours ``lr_max / div_final``. The
  discretisation differs on purpose: torch puts the peak at step ``p * T - 1``, we at
  ``p * (T - 1)`` (progress ``t = i / (T - 1)``, so a run ends exactly on the end value).
  ``p'`` puts our peak on torch's step; then the two agree to float round-off, checked
  here to a relative 1e-9.
- ``CyclicLR(base_lr, max_lr, step_size_up, step_size_down, mode, gamma, base_momentum,
  max_momentum)`` is ``Cyclic(base_lr, max_lr, step_size_up, T, mode, gamma,
  step_size_down)`` for the LR and ``Cyclic(max_momentum, base_momentum, ...)`` for momentum;
  ``Cyclic`` maps progress back to the iteration index, so the match is exact up to round-off.
"""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from onecycle.scheduler import Scheduler
from onecycle.schedules import Cyclic, one_cycle, one_cycle_moms


def _opt(kind: str) -> torch.optim.Optimizer:
    params = [torch.zeros(3, requires_grad=True)]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return torch.optim.Adam(params, lr=0.1, betas=(0.9, 0.999))


def _mom(group: dict) -> float:
    return group["momentum"] if "momentum" in group else group["betas"][0]


def _trace_torch(opt, sched, total: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(total):
        g = opt.param_groups[0]
        out.append((float(g["lr"]), float(_mom(g))))
        opt.step()
        sched.step()
    return out


def _trace_ours(opt, schedules, total: int) -> list[tuple[float, float]]:
    sched = Scheduler(opt, schedules, total)
    out = []
    for _ in range(total):
        g = opt.param_groups[0]
        out.append((float(g["lr"]), float(_mom(g))))
        opt.step()
        sched.step()
    return out


def _assert_close(ours, theirs, scale: float) -> None:
    assert len(ours) == len(theirs)
    for i, ((lr_a, m_a), (lr_b, m_b)) in enumerate(zip(ours, theirs)):
        assert math.isclose(lr_a, lr_b, rel_tol=1e-9, abs_tol=1e-14 * scale), (i, lr_a, lr_b)
        assert math.isclose(m_a, m_b, rel_tol=1e-9, abs_tol=1e-14), (i, m_a, m_b)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(3, 400),
    pct=st.floats(0.02, 0.98),
    max_lr=st.floats(1e-4, 10.0),
    div=st.floats(1.0, 100.0),
    final=st.floats(1.0, 1e5),
    anneal=st.sampled_from(["cos", "linear"]),
    three_phase=st.booleans(),
    cycle_momentum=st.booleans(),
    opt_kind=st.sampled_from(["sgd", "adam"]),
    moms=st.tuples(st.floats(0.5, 0.99), st.floats(0.0, 0.5)),
)
def test_one_cycle_matches_torch_onecyclelr(
    total, pct, max_lr, div, final, anneal, three_phase, cycle_momentum, opt_kind, moms
):
    p_ours = (pct * total - 1) / (total - 1)
    assume(0.0 < p_ours < 1.0 and (pct * total - 1) >= 1.0)
    if three_phase:
        # torch needs distinct phase ends: p*T - 1 < 2pT - 2 < T - 1.
        assume(p_ours <= 0.5 and pct * total - 1 < 2 * pct * total - 2 < total - 1)
    hi, lo = moms
    opt = _opt(opt_kind)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr,
        total_steps=total,
        pct_start=pct,
        anneal_strategy=anneal,
        div_factor=div,
        final_div_factor=final,
        three_phase=three_phase,
        cycle_momentum=cycle_momentum,
        base_momentum=lo,
        max_momentum=hi,
    )
    theirs = _trace_torch(opt, torch_sched, total)

    opt2 = _opt(opt_kind)
    schedules = {"lr": one_cycle(max_lr, div, div * final, p_ours, anneal, three_phase)}
    if cycle_momentum:
        schedules["momentum"] = one_cycle_moms((hi, lo, hi), p_ours, anneal, three_phase)
    ours = _trace_ours(opt2, schedules, total)
    _assert_close(ours, theirs, max_lr)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_defaults_match_torch_on_a_real_length(three_phase, anneal):
    total = 1000  # torch defaults: pct 0.3, div 25, final_div 1e4
    opt = _opt("sgd")
    theirs = _trace_torch(
        opt,
        torch.optim.lr_scheduler.OneCycleLR(
            opt, 0.2, total_steps=total, anneal_strategy=anneal, three_phase=three_phase
        ),
        total,
    )
    p = (0.3 * total - 1) / (total - 1)
    sched = {
        "lr": one_cycle(0.2, 25.0, 25.0 * 1e4, p, anneal, three_phase),
        "momentum": one_cycle_moms((0.95, 0.85, 0.95), p, anneal, three_phase),
    }
    _assert_close(_trace_ours(_opt("sgd"), sched, total), theirs, 0.2)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(2, 300),
    up=st.integers(1, 60),
    down=st.one_of(st.none(), st.integers(1, 60)),
    base=st.floats(1e-4, 0.5),
    span=st.floats(1.01, 100.0),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.9, 1.0),
    opt_kind=st.sampled_from(["sgd", "adam"]),
)
def test_cyclic_matches_torch_cycliclr(total, up, down, base, span, mode, gamma, opt_kind):
    max_lr = base * span
    opt = _opt(opt_kind)
    torch_sched = torch.optim.lr_scheduler.CyclicLR(
        opt,
        base,
        max_lr,
        step_size_up=up,
        step_size_down=down,
        mode=mode,
        gamma=gamma,
        cycle_momentum=True,
        base_momentum=0.8,
        max_momentum=0.9,
    )
    theirs = _trace_torch(opt, torch_sched, total)
    g = gamma if mode == "exp_range" else 1.0
    schedules = {
        "lr": Cyclic(base, max_lr, up, total, mode, g, down),
        "momentum": Cyclic(0.9, 0.8, up, total, mode, g, down),
    }
    _assert_close(_trace_ours(_opt(opt_kind), schedules, total), theirs, max_lr)


def test_torch_onecyclelr_extrapolates_where_we_hold():
    """What torch does at step T (it is allowed to call step() T times): the LR bounces
    back up (cos) or goes negative (linear). Ours holds the final value."""
    total = 10
    for anneal in ("cos", "linear"):
        opt = _opt("sgd")
        s = torch.optim.lr_scheduler.OneCycleLR(opt, 1.0, total_steps=total, anneal_strategy=anneal)
        for _ in range(total):
            opt.step()
            s.step()
        torch_after = opt.param_groups[0]["lr"]
        opt2 = _opt("sgd")
        ours = Scheduler(opt2, {"lr": one_cycle(1.0, 25, 2.5e5, 0.3, anneal)}, total)
        for _ in range(total + 5):
            opt2.step()
            ours.step()
        assert opt2.param_groups[0]["lr"] == pytest.approx(1.0 / 2.5e5, rel=1e-12)
        assert torch_after > 1e-3 or torch_after < 0  # torch's extrapolation, documented
