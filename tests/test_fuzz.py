"""Fuzzing the public surface: every input either works or fails with our clear error
(ConfigError naming the parameter; on the CLI, exit 2 and one line) — never an
unexplained exception."""

import contextlib
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecycle import ConfigError, Learner, NonFiniteLossError, Scheduler
from onecycle import schedules as S
from onecycle.cli import main
from onecycle.data import Loader

anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from([0, 1, -1, 0.5, 1e-12, 1e12, True, None, "0.1", "cos", [], (0.9, 0.8)]),
)
GRID = [i / 50 for i in range(51)]


def _works_or_config_error(make):
    try:
        return make()
    except ConfigError as e:
        assert e.name and "expected" in str(e)
        return None


@settings(max_examples=300, deadline=None)
@given(
    lr_max=anything,
    div=anything,
    div_final=anything,
    pct_start=anything,
    anneal=st.sampled_from(["cos", "linear", "exp", None]),
    three_phase=st.booleans(),
)
def test_one_cycle_fuzz(lr_max, div, div_final, pct_start, anneal, three_phase):
    s = _works_or_config_error(
        lambda: S.one_cycle(lr_max, div, div_final, pct_start, anneal, three_phase)
    )
    if s is not None:  # accepted: then every value is finite and positive
        assert all(math.isfinite(s(t)) and s(t) > 0 for t in GRID)


@settings(max_examples=200, deadline=None)
@given(
    base=anything,
    peak=anything,
    step=anything,
    total=anything,
    kind=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=anything,
)
def test_clr_fuzz(base, peak, step, total, kind, gamma):
    def make():
        if kind == "exp_range":
            return S.exp_range(base, peak, step, total, gamma)
        return getattr(S, kind)(base, peak, step, total)

    s = _works_or_config_error(make)
    if s is not None:
        assert all(math.isfinite(s(t)) and s(t) > 0 for t in GRID)


@settings(max_examples=100, deadline=None)
@given(moms=st.one_of(anything, st.tuples(anything, anything, anything)), pct=anything)
def test_moms_fuzz(moms, pct):
    s = _works_or_config_error(lambda: S.one_cycle_moms(moms, pct))
    if s is not None:
        assert all(0 <= s(t) <= 1 for t in GRID)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_epoch=anything,
    lr_max=st.one_of(anything, st.just(slice(1e-3, 1e-1))),
    wd=anything,
    moms=st.one_of(st.none(), st.tuples(anything, anything, anything)),
    total=anything,
)
def test_learner_and_scheduler_fuzz(n_epoch, lr_max, wd, moms, total):
    x = torch.randn(32, 3)
    y = (x[:, 0] > 0).long()
    learn = Learner(torch.nn.Linear(3, 2), Loader(x, y, 16), loss_func=F.cross_entropy)
    if isinstance(n_epoch, (int, float)) and not isinstance(n_epoch, bool):
        if math.isfinite(n_epoch) and n_epoch > 3:  # 1e6 epochs (int or 1e6.0) would run
            n_epoch = 3  # for hours: keep the fuzz fast, larger values take the same path
    try:
        learn.fit_one_cycle(n_epoch, lr_max, moms=moms, wd=wd)
    except ConfigError as e:
        assert e.name
    except NonFiniteLossError as e:  # a valid but absurd LR (1e33): stopped, clearly
        assert "Lower lr_max" in str(e)
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    _works_or_config_error(lambda: Scheduler(opt, {"lr": S.const(0.1)}, total))


FLAGS = {
    "--epochs": st.sampled_from(["1", "0", "-1", "x", "1.5", ""]),
    "--lr-max": st.sampled_from(["0.01", "auto", "0", "-1", "nan", "inf", "x", "1e400"]),
    "--bs": st.sampled_from(["20", "0", "100000", "x"]),
    "--wd": st.sampled_from(["0", "1e-3", "-1", "nan"]),
    "--pct-start": st.sampled_from(["0.3", "0", "1", "2", "nan"]),
    "--div": st.sampled_from(["25", "0", "-3", "inf"]),
    "--div-final": st.sampled_from(["1e4", "0.5", "0", "nan"]),
    "--schedule": st.sampled_from(["one-cycle", "clr", "step", "warp"]),
    "--model": st.sampled_from(["cnn1d", "mlp", "cnn", "nope"]),
    "--accumulate": st.sampled_from(["1", "2", "0"]),
    "--seed": st.sampled_from(["0", "-5", "x"]),
    "--step-size": st.sampled_from(["5", "0", "-2"]),
    "--moms": st.sampled_from([["0.95", "0.85", "0.95"], ["2", "0.85", "0.95"], ["0.9"]]),
}


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picked=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.none(), max_size=4), data=st.data()
)
def test_cli_fuzz(picked, data, tmp_path_factory):
    argv = [
        "fit",
        "--dataset",
        "mnist1d",
        "--train-samples",
        "200",
        "--no-progress",
        "--out",
        str(tmp_path_factory.mktemp("fuzz")),
    ]
    for flag in picked:
        value = data.draw(FLAGS[flag])
        argv += [flag, *value] if isinstance(value, list) else [flag, value]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    lines = [
        ln
        for ln in err.getvalue().splitlines()
        if ln.strip() and not ln.startswith("onecycle: lr_max=auto")
    ]
    if rc == 0:
        return
    assert rc == 2, (argv, err.getvalue())
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), (argv, err.getvalue())


# --- every public entry point (issue: nothing silently wrong) ------------------------------------

SMALL = st.one_of(  # values near the edges of what each parameter allows
    anything, st.sampled_from([2, 3, 0.9, 0.99, 1.5, 4, 10, 1e-4, "triangular", "exp"])
)


def _tiny_learner(**kw):
    torch.manual_seed(0)
    x = torch.randn(48, 3)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return Learner(model, Loader(x, y, 16), Loader(x, y, 48, shuffle=False),
                   loss_func=F.cross_entropy,
                   splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())],
                   **kw)  # fmt: skip


def _check_trained(learn):
    """A run that was accepted used only values in range."""
    for lr in learn.recorder.lrs:
        assert math.isfinite(lr) and lr >= 0
    for m in learn.recorder.hypers.get("momentum", []):
        assert all(0 <= v <= 1 for v in (m if isinstance(m, list) else [m]))


def _call(fn):
    try:
        fn()
        return True
    except ConfigError as e:
        assert e.name and "expected" in str(e), str(e)
    except NonFiniteLossError as e:  # a valid but absurd LR: stopped, clearly
        assert "Lower lr_max" in str(e)
    return False


@settings(max_examples=80, deadline=None)
@given(
    a=anything, b=anything, c=anything, d=anything,
    kind=st.sampled_from(["sgdr", "warmup", "exp_decay", "step_decay", "join", "cyclic"]),
)  # fmt: skip
def test_other_schedule_builders_fuzz(a, b, c, d, kind):
    make = {
        "sgdr": lambda: S.sgdr(a, b, c, d),
        "warmup": lambda: S.warmup(S.const(0.1), a, b),
        "exp_decay": lambda: S.exp_decay(a, b),
        "step_decay": lambda: S.step_decay(a, b, (0.5,)),
        "join": lambda: S.join([S.const(0.1), S.const(0.2)], [a, b]),
        "cyclic": lambda: S.triangular(a, b, c, d),
    }[kind]
    s = _works_or_config_error(make)
    if s is not None:
        assert all(math.isfinite(s(t)) for t in GRID)


@settings(max_examples=80, deadline=None)
@given(
    key=st.sampled_from(["lr", "momentum", "weight_decay", "dampening", "nope"]),
    start=anything, end=anything, total=anything, last=anything,
)  # fmt: skip
def test_scheduler_and_schedule_lr_fuzz(key, start, end, total, last):
    from onecycle import ScheduleLR

    def make():
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
        spec = {key: S.Lin(start, end)}
        sched = ScheduleLR(opt, spec, total)
        sched.load_state_dict({"last_epoch": last, "_step_count": 1})
        for _ in range(3):
            opt.step()
            sched.step()
        for g in opt.param_groups:  # whatever was accepted is in range
            assert g["lr"] >= 0 and 0 <= g["momentum"] <= 1 and g["weight_decay"] >= 0
        return sched

    _works_or_config_error(make)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["fit", "fit_clr", "fit_sgdr", "fine_tune", "lr_find", "freeze_to",
                            "init"]),
    a=SMALL, b=SMALL, c=SMALL, d=SMALL,
)  # fmt: skip
def test_learner_methods_fuzz(method, a, b, c, d):
    def epochs(v):  # 1e6 epochs would run for hours: larger values take the same path
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return 2 if ok and v > 2 else v

    if method == "init":
        ok = _call(lambda: _tiny_learner(wd=a, moms=(b, c, d) if d != "exp" else d,
                                         metrics=b if callable(b) else [a]))  # fmt: skip
        return
    learn = _tiny_learner()
    calls = {
        "fit": lambda: learn.fit(epochs(a), b, wd=c, start_epoch=d),
        "fit_clr": lambda: learn.fit_clr(epochs(a), b, c, d),
        "fit_sgdr": lambda: learn.fit_sgdr(epochs(a), epochs(b), c, d),
        "fine_tune": lambda: learn.fine_tune(epochs(a), b, epochs(c), d),
        "lr_find": lambda: learn.lr_find(a, b, epochs(c) if c != 2 else 10, d),
        "freeze_to": lambda: learn.freeze_to(a),
    }
    ok = _call(calls[method])
    if ok and method != "lr_find":
        _check_trained(learn)


@settings(max_examples=60, deadline=None)
@given(start=anything, end=anything, num_it=SMALL, mode=SMALL, smooth=anything,
       div_factor=SMALL, accumulate=SMALL)  # fmt: skip
def test_range_test_fuzz(start, end, num_it, mode, smooth, div_factor, accumulate):
    from onecycle.range_test import range_test

    model = torch.nn.Linear(3, 2)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 3)
    y = (x[:, 0] > 0).long()
    if isinstance(num_it, (int, float)) and not isinstance(num_it, bool) and num_it > 50:
        num_it = 50 if math.isfinite(num_it) else num_it
    _works_or_config_error(lambda: range_test(
        model, opt, F.cross_entropy, Loader(x, y, 8), start_lr=start, end_lr=end,
        num_it=num_it, mode=mode, smooth=smooth, div_factor=div_factor, accumulate=accumulate,
    ))  # fmt: skip
    assert torch.equal(model.weight, before)  # accepted or not, nothing changed


SUBCOMMANDS = {
    "schedule": {
        "--steps": st.sampled_from(["100", "0", "-1", "x"]),
        "--lr-max": st.sampled_from(["0.1", "0", "-1", "nan"]),
        "--schedule": st.sampled_from(["one-cycle", "clr", "sgdr", "nope"]),
        "--div": st.sampled_from(["25", "0.5", "0"]),
        "--pct-start": st.sampled_from(["0.3", "0", "1.5"]),
        "--epochs": st.sampled_from(["5", "0"]),
        "--cycles": st.sampled_from(["3", "0", "-2"]),
    },
    "lr-find": {
        "--start-lr": st.sampled_from(["1e-7", "0", "-1", "nan", "20"]),
        "--end-lr": st.sampled_from(["10", "0", "1e-9", "inf"]),
        "--num-it": st.sampled_from(["30", "0", "3", "x"]),
        "--mode": st.sampled_from(["exp", "linear", "log"]),
        "--bs": st.sampled_from(["32", "0"]),
        "--wd": st.sampled_from(["0", "-1", "auto"]),
        "--device": st.sampled_from(["cpu", "banana"]),
    },
    "study": {
        "--epochs": st.sampled_from(["1", "0", "-1"]),
        "--seeds": st.sampled_from(["1", "0"]),
        "--lr-max": st.sampled_from(["0.05", "0", "-1", "nan"]),
        "--evals-per-epoch": st.sampled_from(["1", "0"]),
        "--targets": st.sampled_from([["50"], ["150"], ["-1"]]),
        "--threads": st.sampled_from(["1", "0"]),
        "--bs": st.sampled_from(["50", "0"]),
    },
    "demo": {
        "--epochs": st.sampled_from(["2", "0", "-1", "x"]),
        "--seed": st.sampled_from(["0", "-1"]),
    },
}
BASE = {
    "schedule": [],
    "lr-find": ["--dataset", "mnist1d", "--train-samples", "200"],
    "study": ["--quick", "--train-samples", "300", "--epochs", "1"],
    "demo": ["--no-progress", "--epochs", "1"],
}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(SUBCOMMANDS)), data=st.data())
def test_every_cli_subcommand_fuzz(command, data, tmp_path_factory):
    flags = SUBCOMMANDS[command]
    picked = data.draw(st.lists(st.sampled_from(sorted(flags)), unique=True, max_size=3))
    argv = [command, *BASE[command], "--out", str(tmp_path_factory.mktemp("fuzz"))]
    for flag in picked:
        value = data.draw(flags[flag])
        argv += [flag, *value] if isinstance(value, list) else [flag, value]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text, (argv, text)
    if rc == 0:
        return
    lines = [ln for ln in text.splitlines() if ln.strip()]  # (logging goes to pytest)
    assert rc == 2, (argv, text)
    assert len(lines) == 1, (argv, text)
