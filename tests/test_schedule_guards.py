"""ScheduleLR cannot go silently wrong: each way a trainer can mis-drive a schedule
(issue 14's list) is reproduced here and must warn once, raise, or be handled exactly."""

from __future__ import annotations

import gc
import logging
import warnings

import pytest
import torch
from torch import nn

from onecycle import ConfigError, ScheduleLR, Scheduler
from onecycle.errors import ScheduleWarning
from onecycle.schedules import one_cycle, one_cycle_moms, sample


def _sgd(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr, momentum=0.9)


def _pace_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ScheduleWarning)]


def test_stepping_per_epoch_warns_once_at_the_first_epoch_end():
    # Lightning's `return [opt], [sched]` steps the scheduler once per epoch
    opt = _sgd()
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=4 * 57)
    with pytest.warns(ScheduleWarning, match=r"at step 1 but the optimizer took 57.*per epoch"):
        for _ in range(57):
            opt.step()
        sched.step()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            for _ in range(57):
                opt.step()
            sched.step()
    assert not _pace_warnings(rec)  # once


def test_stepping_twice_per_optimizer_step_warns():
    opt = _sgd()
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=100)
    with pytest.warns(ScheduleWarning, match="more often than the optimizer"):
        for _ in range(10):
            opt.step()
            sched.step()
            sched.step()


def test_a_correct_loop_and_its_resume_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        opt = _sgd()
        sched = ScheduleLR(opt, {"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, 60)
        for _ in range(30):
            opt.step()
            sched.step()
        state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
        opt2 = _sgd()
        sched2 = ScheduleLR(opt2, {"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, 60)
        opt2.load_state_dict(state["opt"])
        sched2.load_state_dict(state["sched"])
        for _ in range(30):  # the new process's optimizer counts from 0: no false alarm
            opt2.step()
            sched2.step()
        assert sched2.last_epoch == 60


def test_a_few_steps_skipped_by_a_grad_scaler_are_tolerated():
    opt = _sgd()
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        for i in range(200):
            if i >= 3:  # fp16's first steps are skipped while the scale calibrates
                opt.step()
            sched.step()


@pytest.mark.parametrize(
    "other",
    [
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5),
    ],
)
def test_a_second_scheduler_whose_changes_are_overwritten_warns(other):
    opt = _sgd()
    ours = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=50)
    theirs = other(opt)
    with pytest.warns(ScheduleWarning, match="param group 0's lr .* something else changed it"):
        for _ in range(5):
            opt.step()
            ours.step()
            if isinstance(theirs, torch.optim.lr_scheduler.ReduceLROnPlateau):
                theirs.step(1.0)  # a plateau: it cuts the LR
            else:
                theirs.step()


def test_chained_scheduler_is_reported():
    opt = _sgd()
    ours = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=50)
    chain = torch.optim.lr_scheduler.ChainedScheduler(
        [ours, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)]
    )
    with pytest.warns(ScheduleWarning, match="something else changed it"):
        for _ in range(3):
            opt.step()
            chain.step()


def test_a_group_added_after_construction_raises_by_default():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9)
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=20)
    opt.step()
    sched.step()
    opt.add_param_group({"params": model[0].parameters(), "lr": 0.01})  # BackboneFinetuning
    opt.step()
    with pytest.raises(ConfigError, match=r"2 groups, \+1 .*new_groups='follow'"):
        sched.step()


def test_new_groups_follow_group_0_scaled_by_their_ratio():
    total, at = 20, 6
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9)
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, total,
                       new_groups="follow")  # fmt: skip
    head, body = [], []
    for i in range(total):
        if i == at:  # the body joins at a tenth of the head's current LR
            lr0 = opt.param_groups[0]["lr"]
            opt.add_param_group({"params": model[0].parameters(), "lr": lr0 / 10,
                                 "momentum": 0.5})  # fmt: skip
        head.append(opt.param_groups[0]["lr"])
        if i >= at:
            body.append((opt.param_groups[1]["lr"], opt.param_groups[1]["momentum"]))
        opt.step()
        sched.step()
    assert head == pytest.approx(sample(one_cycle(0.1), total), rel=1e-12)
    assert [b[0] for b in body] == pytest.approx([h / 10 for h in head[at:]], rel=1e-9)
    moms = sample(one_cycle_moms(), total)
    assert [b[1] for b in body[1:]] == pytest.approx(moms[at + 1 :])  # group 0's momentum


def test_a_removed_group_always_raises():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[1].parameters()}],
                          lr=0.1)  # fmt: skip
    sched = Scheduler(opt, {"lr": one_cycle(0.1)}, 10, new_groups="follow")
    opt.param_groups.pop()
    with pytest.raises(ConfigError, match="-1 since"):
        sched.step()


class _Adan(torch.optim.Optimizer):
    """Three betas, as timm's Adan: (0.98, 0.92, 0.99)."""

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99)):
        super().__init__(params, {"lr": lr, "betas": betas})

    def step(self, closure=None):
        return None


def test_three_betas_keep_all_but_the_first():
    opt = _Adan(nn.Linear(2, 1).parameters())
    sched = ScheduleLR(opt, {"lr": one_cycle(0.01), "momentum": one_cycle_moms()}, 10)
    for _ in range(4):
        opt.step()
        sched.step()
    betas = opt.param_groups[0]["betas"]
    assert len(betas) == 3 and betas[1:] == (0.92, 0.99)
    assert betas[0] == pytest.approx(sample(one_cycle_moms(), 10)[4])
    assert sched.get_last_values()["momentum"] == [betas[0]]


def test_get_last_values_names_every_scheduled_key():
    opt = torch.optim.AdamW(nn.Linear(2, 1).parameters(), lr=1e-3, weight_decay=0.1)
    sched = ScheduleLR(opt, {"lr": one_cycle(0.01), "momentum": one_cycle_moms(),
                             "weight_decay": one_cycle(0.1)}, 10)  # fmt: skip
    opt.step()
    sched.step()
    values = sched.get_last_values()
    assert set(values) == {"lr", "momentum", "weight_decay"}
    assert values["lr"] == sched.get_last_lr() and values["momentum"] == [
        opt.param_groups[0]["betas"][0]
    ]  # fmt: skip


def test_timm_protocol_step_update_drives_and_step_epoch_is_ignored():
    # timm's train.py: step_update(num_updates) after each update, step(epoch + 1, metric)
    # at each epoch end; on resume step_update(start_epoch * updates_per_epoch) first
    total, per_epoch = 30, 10
    opt = _sgd()
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total)
    lrs, num_updates = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        for epoch in range(3):
            for _ in range(per_epoch):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                num_updates += 1
                sched.step_update(num_updates=num_updates, metric=0.5)
            sched.step(epoch + 1, 0.5)  # must not rewind to step 1, 2, 3
        assert lrs == pytest.approx(sample(one_cycle(0.1), total), rel=1e-12)
        # resume in a new process at epoch 2
        opt2 = _sgd()
        sched2 = ScheduleLR(opt2, {"lr": one_cycle(0.1)}, total)
        sched2.step_update(2 * per_epoch)
        tail = []
        for _ in range(per_epoch):
            tail.append(opt2.param_groups[0]["lr"])
            opt2.step()
            sched2.step_update(sched2.last_epoch + 1)
        assert tail == pytest.approx(lrs[2 * per_epoch :], rel=1e-12)


def test_step_with_an_epoch_argument_is_refused_outside_timm():
    opt = _sgd()
    sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, 30)
    for _ in range(10):
        opt.step()
        sched.step()
    with pytest.raises(ConfigError, match=r"epoch=1 .*step_update"):
        sched.step(1)  # torch's deprecated form would rewind the schedule to step 1
    assert sched.last_epoch == 10


def test_a_schedule_stopped_far_short_of_its_end_warns_when_collected(caplog):
    # the HF + torchrun case: total_steps counted for one process, the run took half
    with caplog.at_level(logging.WARNING, logger="onecycle.scheduler"):
        opt = _sgd()
        sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=228)
        for _ in range(116):
            opt.step()
            sched.step()
        del sched
        gc.collect()
        done = _sgd()
        finished = ScheduleLR(done, {"lr": one_cycle(0.1)}, total_steps=20)
        for _ in range(20):
            done.step()
            finished.step()
        del finished
        gc.collect()
    msgs = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert len(msgs) == 1 and "step 116 of total_steps=228" in msgs[0]


def test_the_learner_reports_a_callback_that_changes_a_scheduled_lr():
    from onecycle import Callback, Learner
    from onecycle.data import Loader

    class Meddle(Callback):
        def after_step(self, learn):
            if learn.scheduler.step_count == 3:
                learn.opt.param_groups[0]["lr"] = 123.0

    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    learn = Learner(nn.Linear(2, 2), Loader(x, y, 32), loss_func=nn.functional.cross_entropy)
    with pytest.warns(ScheduleWarning, match="lr is 123"):
        learn.fit_one_cycle(1, 0.1, cbs=[Meddle()])
