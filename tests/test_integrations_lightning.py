"""onecycle inside the real PyTorch Lightning: each silent failure of issue 14 reproduced
with Lightning itself, and the OneCycle / LRFinder callbacks checked against
``schedules.sample`` of the same schedule (accumulation, resume, 2-process DDP)."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from conftest import need

pl = need("lightning.pytorch")  # the `integrations` extra: `make test` installs it

from lightning_workers import Tiny, Trace, interrupted_after_epoch_1, loader, trainer  # noqa: E402

from onecycle import ConfigError  # noqa: E402
from onecycle.errors import ScheduleWarning  # noqa: E402
from onecycle.integrations.lightning import LRFinder, OneCycle  # noqa: E402
from onecycle.schedules import one_cycle, one_cycle_moms, sample  # noqa: E402

warnings.filterwarnings("ignore", ".*does not have many workers.*")


def test_one_cycle_follows_the_schedule_exactly_under_accumulation():
    trace = Trace()
    t = trainer(max_epochs=3, accumulate_grad_batches=2, callbacks=[OneCycle(0.1), trace])
    t.fit(Tiny(), loader())
    total = 3 * 16 // 2
    assert len(trace.steps) == total
    lrs, moms = [s[0][0] for s in trace.steps], [s[0][1] for s in trace.steps]
    assert lrs == pytest.approx(sample(one_cycle(0.1), total), rel=1e-12)
    assert moms == pytest.approx(sample(one_cycle_moms(), total))


def test_max_steps_sets_the_schedules_length():
    t = trainer(max_steps=20, max_epochs=-1, callbacks=[OneCycle(0.1), Trace()])
    t.fit(Tiny(), loader())
    steps = t.callbacks[1].steps
    assert [s[0][0] for s in steps] == pytest.approx(sample(one_cycle(0.1), 20), rel=1e-12)


def test_resume_from_a_lightning_checkpoint_continues_the_schedule(tmp_path):
    full = trainer(max_epochs=3, callbacks=[OneCycle(0.1), Trace()])
    full.fit(Tiny(), loader())
    ref = [s[0] for s in full.callbacks[1].steps]

    head, path = interrupted_after_epoch_1(tmp_path)  # a 3-epoch run stopped after epoch 1
    tail = trainer(max_epochs=3, callbacks=[OneCycle(0.1), Trace()])
    tail.fit(Tiny(), loader(), ckpt_path=path)
    got = [s[0] for s in head.callbacks[1].steps] + [s[0] for s in tail.callbacks[1].steps]
    assert len(got) == len(ref) == 48
    assert [g[0] for g in got] == pytest.approx([r[0] for r in ref], rel=1e-12)
    assert [g[1] for g in got] == pytest.approx([r[1] for r in ref], rel=1e-12)


def test_a_plain_schedule_lr_stepped_per_epoch_by_lightning_warns():
    # issue 14: `return [opt], [sched]` stepped the schedule 4 times in 228 steps, silently
    t = trainer(max_epochs=3)
    with pytest.warns(ScheduleWarning, match="per epoch"):
        t.fit(Tiny(scheduler="epoch"), loader())


def test_a_plain_schedule_lr_with_interval_step_is_exact_and_quiet():
    t = trainer(max_epochs=3, callbacks=[Trace()])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        t.fit(Tiny(scheduler="step"), loader())
    lrs = [s[0][0] for s in t.callbacks[0].steps]
    assert lrs == pytest.approx(sample(one_cycle(0.1), 48), rel=1e-12)


def test_backbone_finetuning_adds_a_group_a_plain_schedule_lr_refuses_it():
    from lightning.pytorch.callbacks import BackboneFinetuning

    t = trainer(max_epochs=3, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1)])
    with pytest.raises(ConfigError, match=r"\+1 since .*new_groups='follow'"):
        t.fit(Tiny(scheduler="step", backbone=True), loader())


def test_backbone_finetuning_with_one_cycle_follows_the_head_and_reports_its_changes():
    from lightning.pytorch.callbacks import BackboneFinetuning

    bf = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    t = trainer(max_epochs=3, callbacks=[bf, OneCycle(0.1), Trace()])
    # BackboneFinetuning raises the backbone's LR at each epoch start: reported, overwritten
    with pytest.warns(ScheduleWarning, match="param group 1's lr .* something else changed it"):
        t.fit(Tiny(backbone=True), loader())
    steps = t.callbacks[-1].steps
    head = sample(one_cycle(0.1), 48)
    assert [s[0][0] for s in steps] == pytest.approx(head, rel=1e-12)
    body = {i: s[1][0] for i, s in enumerate(steps) if len(s) > 1}
    assert min(body) == 16  # the backbone joined at epoch 1, at a tenth of the head's LR
    assert body[16] == pytest.approx(head[16] / 10)
    scheduled = [i for i in body if i != 32]  # at epoch 2's start: BackboneFinetuning's value
    assert [body[i] for i in scheduled] == pytest.approx([head[i] / 10 for i in scheduled])


def test_a_scheduler_from_configure_optimizers_and_one_cycle_are_refused():
    t = trainer(max_epochs=1, callbacks=[OneCycle(0.1)])
    with pytest.raises(ConfigError, match="configure_optimizers"):
        t.fit(Tiny(scheduler="step"), loader())


def test_lr_finder_then_one_cycle_auto_restores_the_weights_and_uses_the_pick():
    torch.manual_seed(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class FirstBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 0 and batch_idx == 0:
                self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}

    finder, fb = LRFinder(num_it=60), FirstBatch()
    t = trainer(max_epochs=2, callbacks=[finder, OneCycle("auto"), fb, Trace()])
    t.fit(model, loader())
    assert finder.lr_max is not None and finder.result.lrs
    assert all(torch.equal(before[k], fb.weights[k]) for k in before)  # the sweep was undone
    lrs = [s[0][0] for s in t.callbacks[-1].steps]
    assert max(lrs) == pytest.approx(finder.lr_max, rel=0.05)


def test_one_cycle_auto_without_a_finder_is_refused():
    t = trainer(max_epochs=1, callbacks=[OneCycle("auto")])
    with pytest.raises(ConfigError, match="LRFinder"):
        t.fit(Tiny(), loader())


@pytest.mark.slow
def test_two_process_ddp_each_rank_follows_the_per_process_schedule(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    prefix = str(tmp_path / "rank")
    script = Path(__file__).with_name("lightning_workers.py")
    env = {**os.environ, "PYTHONPATH": str(script.parent)}
    proc = subprocess.run([sys.executable, str(script), prefix], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["total"] == 2 * 8  # 16 batches per epoch, split over 2 processes
        lrs = [s[0][0] for s in got["steps"]]
        assert lrs == pytest.approx(sample(one_cycle(0.1), 16), rel=1e-12)
