"""The small surprises of a first hour (issue 28), each fixed: every test here fails on the
code before it."""

from __future__ import annotations

import functools
import gc
import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import CheckpointError, Learner, ScheduleLR, Scheduler, range_test
from onecycle.checkpoint import latest, restore
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.schedules import one_cycle

ROOT = Path(__file__).resolve().parents[1]


def _learner(**kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x.sum(1) > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    return Learner(model, Loader(x, y, 32), Loader(x, y, 256), loss_func=F.cross_entropy, **kw)


def test_lr_find_keeps_its_result_on_the_learner():
    learn = _learner()
    res = learn.lr_find(num_it=30)
    assert learn.lr_find_result is res


def test_a_range_test_without_a_recommendation_says_why():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x.sum(1) > 0).long()
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]
    res = range_test(model, opt, F.cross_entropy, batches, num_it=50, end_lr=1e-4)
    assert res.recommended is None and res.lr_max is None
    assert res.reason.startswith("too flat")  # the why, where a bare None said nothing
    assert "lr_max" in repr(res) and res.reason in repr(res)
    good = range_test(model, opt, F.cross_entropy, batches, num_it=100, end_lr=100.0)
    assert good.lr_max == good.recommended.lr and good.reason == good.recommended.reason


def test_the_results_repr_is_short():
    learn = _learner()
    res = learn.lr_find(num_it=100)
    text = repr(res)
    assert len(text) < 1000 and len(text.splitlines()) <= 8  # was 8,705 characters of lists
    assert text.startswith("RangeTestResult: ") and "lr_max" in text


def test_a_bare_schedule_given_to_schedule_lr_is_named_with_the_fix():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ConfigError) as e:
        ScheduleLR(opt, one_cycle(0.1), total_steps=10)
    msg = str(e.value)
    assert msg.startswith("schedules=Join(") and "{'lr': one_cycle(0.1)}" in msg
    assert not msg.startswith("schedules=1e-06")  # the value it used to name


def test_a_number_is_a_constant_schedule():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.5, momentum=0.9)
    sched = Scheduler(opt, {"lr": 0.1, "momentum": one_cycle(0.9, div=1.0)}, 10)
    assert opt.param_groups[0]["lr"] == 0.1
    for _ in range(9):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.1
    two = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)]}], lr=1.0)  # fmt: skip
    Scheduler(two, {"lr": [0.01, one_cycle(0.1)]}, 10)  # per group: a number and a schedule
    assert two.param_groups[0]["lr"] == 0.01
    lr = ScheduleLR(opt, {"lr": 0.2}, 5)
    assert lr.get_last_lr() == [0.2]
    with pytest.raises(ConfigError, match=r"^value=nan is invalid"):
        Scheduler(opt, {"lr": float("nan")}, 10)


def test_restore_into_a_learner_that_is_not_fitting_says_what_to_do(tmp_path):
    from onecycle import Checkpoint

    learn = _learner()
    learn.fit_one_cycle(1, 0.1, cbs=[Checkpoint(tmp_path)])
    _, state = latest(tmp_path)
    fresh = _learner()
    with pytest.raises(CheckpointError, match=r"restore\(\) continues a fit that is set up.*"
                       r"learn\.load\(path\)"):  # fmt: skip
        restore(fresh, state)  # was a bare AssertionError


def test_restore_into_a_learner_of_another_optimizer_says_what_differs(tmp_path):
    from onecycle import Checkpoint, adamw

    learn = _learner()
    learn.fit_one_cycle(1, 0.1, cbs=[Checkpoint(tmp_path)])
    other = _learner(opt_func=adamw)
    with pytest.raises(CheckpointError, match="does not fit this Learner: the file's optimizer"):
        other.fit_one_cycle(1, 0.1, resume=tmp_path)


def _cell(model_seed: int, steps: int) -> ScheduleLR:
    """A notebook cell: a model, an optimizer and a ScheduleLR, trained a few steps."""
    torch.manual_seed(model_seed)
    opt = torch.optim.SGD(nn.Linear(3, 5).parameters(), lr=0.1)
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=100)
    for _ in range(steps):
        opt.step()
        sched.step()
    return sched


def test_a_notebook_cell_run_again_does_not_cry_wolf(caplog):
    with caplog.at_level(logging.WARNING, logger="onecycle.scheduler"):
        sched = _cell(0, 5)
        sched = _cell(0, 5)  # the same cell again: the first scheduler is replaced
        gc.collect()
        msgs = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
        assert msgs == []
        del sched  # the last run stopped short for real: that one is still reported
        gc.collect()
    msgs = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert len(msgs) == 1 and "step 5 of total_steps=100" in msgs[0]


def test_an_optimizer_with_its_own_weight_decay_is_refused_while_wd_is_set():
    learn = _learner(opt_func=torch.optim.AdamW)  # AdamW's own weight_decay is 0.01
    with pytest.raises(ConfigError, match=r"^opt_func='AdamW with weight_decay=0.01' is invalid:"
                       r".*wd=0.0005.*Learner\(\.\.\., wd=0\)"):  # fmt: skip
        learn.fit_one_cycle(1, 0.01)
    assert learn.opt is None  # refused before anything trained
    ok = _learner(opt_func=torch.optim.AdamW, wd=0.0)  # the optimizer's own decay alone
    ok.fit_one_cycle(1, 0.01)
    nodecay = _learner(opt_func=functools.partial(torch.optim.AdamW, weight_decay=0.0))
    nodecay.fit_one_cycle(1, 0.01)  # the Learner's decoupled wd alone


LINK = re.compile(r"\]\(([^)\s]+)\)|`(\.\./[^`\s]+)`")


def test_docs_never_link_outside_the_repository():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        for m in LINK.finditer(doc.read_text()):
            target = (m.group(1) or m.group(2)).split("#")[0]
            if not target or target.startswith(("http://", "https://")):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), (doc.name, target)
