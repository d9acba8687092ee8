"""Extending a run without restarting its warm-up: the pure schedule, ScheduleLR (live and
on resume with more steps), Lightning and Hugging Face resumed with more epochs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import need

from onecycle import ConfigError, ScheduleLR
from onecycle import schedules as S


def test_wsd_extended_before_its_cooldown_is_a_longer_stable_phase_and_the_same_cooldown():
    old, new, at = 100, 150, 79  # cooldown_pct 0.2: the last stable step is 79
    plan = S.wsd(1.0, warmup=0.1, cooldown_pct=0.2, cooldown="linear")
    before, after = S.sample(plan, old), S.sample(S.extend(plan, old, new, at), new)
    assert after[: at + 1] == before[: at + 1]  # the warm-up is not restarted
    assert after[at + 1 : at + 51] == [before[at]] * 50  # held at the stable LR
    assert after[at + 50 :] == pytest.approx(before[at:])  # the same cooldown


def test_one_cycle_extended_holds_then_anneals_as_planned():
    old, new, at = 40, 60, 25
    plan = S.one_cycle(0.1)
    before, after = S.sample(plan, old), S.sample(S.extend(plan, old, new, at), new)
    assert after[:at] == pytest.approx(before[:at])
    assert after[at : at + 21] == pytest.approx([before[at]] * 21)
    assert after[at + 20 :] == pytest.approx(before[at:])


@pytest.mark.parametrize("kw,name", [({"new_total": 50}, "new_total"), ({"at": 100}, "at")])
def test_extend_refuses_a_shorter_run_or_a_step_outside_the_plan(kw, name):
    args = {"schedule": S.one_cycle(0.1), "old_total": 100, "new_total": 120, "at": 10, **kw}
    with pytest.raises(ConfigError, match=name):
        S.extend(**args)


def _opt():
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)


def _trace(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedule_lr_resumed_with_more_steps_extends_from_the_checkpoint(caplog):
    spec = {"lr": S.one_cycle(0.1), "momentum": S.one_cycle_moms()}
    opt = _opt()
    sched = ScheduleLR(opt, spec, 40)
    head = _trace(opt, sched, 25)
    state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
    opt2 = _opt()
    sched2 = ScheduleLR(opt2, spec, 60)  # the same command with more epochs
    opt2.load_state_dict(state["opt"])
    with caplog.at_level("INFO", logger="onecycle.scheduler"):
        sched2.load_state_dict(state["sched"])
    assert any("extended to 60 from step 25" in r.getMessage() for r in caplog.records)
    tail = _trace(opt2, sched2, 35)
    expected = S.sample(S.extend(S.one_cycle(0.1), 40, 60, 25), 60)
    assert head + tail == pytest.approx(expected, rel=1e-12)


def test_schedule_lr_refuses_a_resume_into_a_shorter_plan():
    opt = _opt()
    sched = ScheduleLR(opt, {"lr": S.one_cycle(0.1)}, 40)
    _trace(opt, sched, 10)
    short = ScheduleLR(_opt(), {"lr": S.one_cycle(0.1)}, 30)
    with pytest.raises(ConfigError, match="planned for 40"):
        short.load_state_dict(sched.state_dict())


def test_schedule_lr_extend_live():
    opt = _opt()
    sched = ScheduleLR(opt, {"lr": S.wsd(0.1, 0.1, 0.2)}, 50)
    head = _trace(opt, sched, 30)
    sched.extend(80)  # going well: 30 more steps, at the stable LR, then the cooldown
    tail = _trace(opt, sched, 50)
    expected = S.sample(S.extend(S.wsd(0.1, 0.1, 0.2), 50, 80, 30), 80)
    assert head + tail == pytest.approx(expected, rel=1e-12)


def test_lightning_resumed_with_more_epochs_extends_the_cycle(tmp_path):
    need("lightning.pytorch")
    from lightning_workers import Tiny, Trace, interrupted_after_epoch_1, loader, trainer

    from onecycle.integrations.lightning import OneCycle

    head, path = interrupted_after_epoch_1(tmp_path)
    tail = trainer(max_epochs=4, callbacks=[OneCycle(0.1), Trace()])  # one epoch more
    tail.fit(Tiny(), loader(), ckpt_path=path)
    got = [s[0][0] for s in head.callbacks[1].steps + tail.callbacks[1].steps]
    expected = S.sample(S.extend(S.one_cycle(0.1), 48, 64, 16), 64)
    assert got == pytest.approx(expected, rel=1e-12)


def test_hugging_face_resumed_with_more_epochs_extends_the_cycle(tmp_path):
    need("transformers")
    from hf_workers import Data, Tiny, Trace, args

    from onecycle.integrations.transformers import OneCycleTrainer

    head = Trace()
    OneCycleTrainer(model=Tiny(), args=args(str(tmp_path / "a"), save_strategy="steps",
                                            save_steps=10), train_dataset=Data(),
                    callbacks=[head]).train()  # fmt: skip
    tail = Trace()
    OneCycleTrainer(model=Tiny(), args=args(str(tmp_path / "b"), num_train_epochs=4),
                    train_dataset=Data(), callbacks=[tail]).train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-10"))  # fmt: skip
    expected = S.sample(S.extend(S.one_cycle(0.1), 48, 64, 10), 64)
    got = [s[0] for s in head.steps[:10] + tail.steps]
    assert got == pytest.approx(expected, rel=1e-12)


def _fashionless_learner(tmp, *extra):
    from onecycle import Checkpoint, Learner
    from onecycle.data import Loader

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return Learner(model, Loader(x, y, 32, seed=0), loss_func=torch.nn.functional.cross_entropy,
                   cbs=[Checkpoint(tmp), *extra])  # fmt: skip


class _StopAt:
    """Interrupt a fit at the end of epoch ``epoch`` (after its checkpoint)."""

    def __new__(cls, epoch):
        from onecycle import Callback, CancelFit

        class Stop(Callback):
            order = 99  # after the Checkpoint callback

            def after_epoch(self, learn):
                if learn.epoch == epoch:
                    raise CancelFit

        return Stop()


def test_learner_extends_a_shorter_run_from_its_checkpoint_bit_exactly(tmp_path):
    ref = _fashionless_learner(tmp_path / "ref")  # one uninterrupted run of the extended plan
    extended = {"lr": [S.extend(S.one_cycle(0.1), 48, 64, 16)],
                "momentum": S.extend(S.one_cycle_moms(), 48, 64, 16)}  # fmt: skip
    ref.fit(4, [0.1], schedules=extended)
    head = _fashionless_learner(tmp_path / "run", _StopAt(0))
    head.fit_one_cycle(3, 0.1)  # planned for 3 epochs, stopped after the first
    tail = _fashionless_learner(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"planned for 3 epochs .*extend=True"):
        tail.fit_one_cycle(4, 0.1, resume=tmp_path / "run")  # without extend: refused
    tail = _fashionless_learner(tmp_path / "run", _StopAt(2))
    tail.fit_one_cycle(4, 0.1, resume=tmp_path / "run", extend=True)
    assert tail.recorder.lrs == pytest.approx(S.sample(extended["lr"][0], 64)[:48], rel=1e-12)
    last = _fashionless_learner(tmp_path / "run")  # resume the extended run: no flag needed
    last.fit_one_cycle(4, 0.1, resume=tmp_path / "run")
    for a, b in zip(ref.model.parameters(), last.model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="a longer fit"):
        _fashionless_learner(tmp_path / "run").fit_one_cycle(2, 0.1, resume=tmp_path / "run",
                                                             extend=True)  # fmt: skip


def test_cli_fit_extend(tmp_path, capsys):
    from onecycle.cli import main

    out = str(tmp_path / "run")
    base = ["fit", "--dataset", "mnist1d", "--train-samples", "1000", "--no-progress",
            "--lr-max", "0.03", "--out", out]  # fmt: skip
    assert main([*base, "--epochs", "2"]) == 0
    assert main([*base, "--epochs", "3", "--resume"]) == 2
    assert "--extend" in capsys.readouterr().err
    assert main([*base, "--epochs", "3", "--resume", "--extend", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["final"]["optimizer_steps"] == 30
    assert main([*base, "--epochs", "3", "--extend"]) == 2  # --extend needs --resume
