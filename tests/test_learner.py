"""The Learner: an oracle (a hand-written loop), event order and cancellation, recorder =
schedule, discriminative LRs, accumulation, skipped AMP steps, non-finite losses, weight
decay, freezing."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import (
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    ConfigError,
    GradientAccumulation,
    GradientClip,
    Learner,
    MixedPrecision,
    NonFiniteLossError,
    Scheduler,
    accuracy,
)
from onecycle.callbacks import EVENTS
from onecycle.data import Loader
from onecycle.schedules import one_cycle, one_cycle_moms, sample


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4] > 0).long()
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def _learner(cbs=(), bs=32, n=256, **kw):
    x, y = _data(n)
    return Learner(
        _model(),
        Loader(x, y, bs, seed=1),
        Loader(x, y, min(128, n), shuffle=False),
        loss_func=F.cross_entropy,
        metrics=[accuracy],
        cbs=cbs,
        **kw,
    )


def test_fit_one_cycle_equals_a_hand_written_loop_bit_for_bit():
    learn = _learner(wd=0.0)
    learn.fit_one_cycle(3, lr_max=0.3)

    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True)
    loader = Loader(x, y, 32, seed=1)
    sched = Scheduler(opt, {"lr": one_cycle(0.3), "momentum": one_cycle_moms()}, 3 * len(loader))
    for epoch in range(3):
        model.train()
        loader.set_epoch(epoch)
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
    for a, b in zip(learn.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_fit_one_cycle_is_close_to_torch_onecyclelr():
    """Same loop driven by torch's OneCycleLR (mapped parameters): equal to round-off."""
    learn = _learner(wd=0.0)
    total = 2 * 8
    p = (0.3 * total - 1) / (total - 1)
    learn.fit_one_cycle(2, lr_max=0.3, div=25.0, div_final=25.0 * 1e4, pct_start=p)
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.3, total_steps=total)
    loader = Loader(x, y, 32, seed=1)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for xb, yb in loader:
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
    for a, b in zip(learn.model.state_dict().values(), model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)


class Trace(Callback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name in EVENTS:
            return lambda learn: object.__getattribute__(self, "events").append(name)
        return object.__getattribute__(self, name)


for _e in EVENTS:  # make every event count as overridden
    setattr(Trace, _e, lambda self, learn: None)


def test_event_order():
    t = Trace()
    learn = _learner(cbs=[t], n=64, bs=32)
    learn.fit(1, 0.1)
    batch = ["before_batch", "after_loss", "after_backward", "after_step", "after_batch"]
    assert t.events == [
        "before_fit", "before_epoch", "before_train", *batch, *batch, "after_train",
        "before_validate", "after_validate", "after_epoch", "after_fit",
    ]  # fmt: skip


class CancelAt(Callback):
    def __init__(self, event, exc, at_iter=1, at_epoch=0):
        self.event, self.exc, self.at_iter, self.at_epoch = event, exc, at_iter, at_epoch
        setattr(self, event, self._maybe)

    def _maybe(self, learn):
        if learn.iter == self.at_iter and learn.epoch == self.at_epoch:
            raise self.exc()


for _e in ("before_batch", "after_backward"):
    setattr(CancelAt, _e, lambda self, learn: None)


def test_cancel_batch_skips_the_step_and_its_gradients():
    learn = _learner(cbs=[CancelAt("after_backward", CancelBatch)], n=128, bs=32)
    learn.fit(2, 0.1)
    assert len(learn.recorder.lrs) == 2 * 4 - 1  # one step skipped
    assert all(p.grad is None for p in learn.model.parameters())


def test_cancel_epoch_and_cancel_fit():
    learn = _learner(cbs=[CancelAt("before_batch", CancelEpoch, at_iter=2)], n=128, bs=32)
    learn.fit(2, 0.1)
    assert len(learn.recorder.rows) == 2 and len(learn.recorder.lrs) == 2 + 4
    assert "valid_loss" not in learn.recorder.rows[0]  # validation skipped too
    t = Trace()
    learn = _learner(
        cbs=[CancelAt("before_batch", CancelFit, at_iter=1, at_epoch=1), t], n=128, bs=32
    )
    learn.fit(3, 0.1)
    assert len(learn.recorder.lrs) == 4 + 1
    assert t.events[-3:] == ["after_batch", "after_epoch", "after_fit"]


def test_recorder_holds_exactly_the_schedule():
    learn = _learner(n=256, bs=32)
    learn.fit_one_cycle(3, lr_max=0.5, pct_start=0.3)
    total = 3 * 8
    assert learn.recorder.lrs == sample(one_cycle(0.5, pct_start=0.3), total)
    assert learn.recorder.moms == sample(one_cycle_moms(pct_start=0.3), total)
    assert len(learn.recorder.losses) == total and len(learn.recorder.rows) == 3


def test_discriminative_lrs_per_group():
    model = _model()
    split = lambda m: [list(m[0].parameters()) + list(m[1].parameters()), list(m[3].parameters())]  # noqa: E731
    x, y = _data()
    learn = Learner(model, Loader(x, y, 64), loss_func=F.cross_entropy, splitter=split)
    assert learn.group_values(slice(1e-3, 1e-1)) == pytest.approx([1e-3, 1e-1])
    assert learn.group_values(slice(0.1)) == pytest.approx([0.01, 0.1])
    learn.fit_one_cycle(1, lr_max=slice(1e-3, 1e-1))
    per_step = learn.recorder.hypers["lr"]
    assert [v[0] for v in per_step] == sample(one_cycle(1e-3), 4)
    assert [v[1] for v in per_step] == sample(one_cycle(1e-1), 4)
    with pytest.raises(ConfigError, match="lr_max"):
        learn.fit_one_cycle(1, lr_max=[0.1, 0.2, 0.3])


def test_accumulation_counts_optimizer_steps():
    learn = _learner(cbs=[GradientAccumulation(3)], n=320, bs=32)  # 10 batches per epoch
    learn.fit_one_cycle(2, lr_max=0.2)
    steps = 2 * math.ceil(10 / 3)
    assert len(learn.recorder.lrs) == steps
    assert learn.recorder.lrs == sample(one_cycle(0.2), steps)
    assert len(learn.recorder.losses) == 20  # losses stay per batch


def test_accumulation_matches_one_big_batch():
    x, y = _data(128)

    def mlp():  # no batch norm: its statistics differ between micro-batches by design
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    a = Learner(
        mlp(),
        Loader(x, y, 32, shuffle=False),
        loss_func=F.cross_entropy,
        wd=0.0,
        cbs=[GradientAccumulation(4)],
    )
    a.fit(1, 0.1)
    b = Learner(mlp(), Loader(x, y, 128, shuffle=False), loss_func=F.cross_entropy, wd=0.0)
    b.fit(1, 0.1)
    for (k, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6), k


class InfGradAt(Callback):
    """Puts an inf in a gradient at one step and wires a CPU GradScaler in."""

    order = 1

    def __init__(self, at):
        self.at = at

    def before_fit(self, learn):
        learn.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)

    def after_backward(self, learn):
        if learn.iter == self.at and learn.epoch == 0:
            next(learn.model.parameters()).grad[0, 0] = float("inf")


def test_a_step_the_scaler_skips_does_not_advance_the_schedule():
    learn = _learner(cbs=[InfGradAt(3)], n=256, bs=32, wd=0.0)
    before = copy.deepcopy(learn.model.state_dict())
    learn.fit_one_cycle(1, lr_max=0.2)
    lrs = learn.recorder.lrs
    assert len(lrs) == 7  # 8 batches, one step skipped
    assert lrs == [one_cycle(0.2)(i / 7) for i in range(7)]  # schedule of 8 steps, no gap
    assert learn.scheduler.step_count == 7
    assert not torch.equal(before["0.weight"], learn.model.state_dict()["0.weight"])


class Snapshot(Callback):
    def after_step(self, learn):
        self.state = copy.deepcopy(learn.model.state_dict())
        self.steps = learn.scheduler.step_count


def test_non_finite_loss_stops_before_the_step():
    calls = {"n": 0}

    def loss(pred, y):
        calls["n"] += 1
        out = F.cross_entropy(pred, y)
        return out * float("nan") if calls["n"] == 6 else out

    snap = Snapshot()
    x, y = _data()
    learn = Learner(_model(), Loader(x, y, 32), loss_func=loss, cbs=[snap])
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 0, optimizer step 5"
    ):
        learn.fit_one_cycle(2, 0.1)
    assert snap.steps == 5
    params = {
        k: v
        for k, v in learn.model.state_dict().items()
        if "num_batches" not in k and "running" not in k
    }
    for k, v in params.items():
        assert torch.equal(v, snap.state[k]), k


def test_decoupled_weight_decay_skips_biases_and_norms():
    x, y = _data(32)
    model = _model()
    start = copy.deepcopy(model.state_dict())
    opt_func = lambda ps, lr: torch.optim.SGD(ps, lr=lr)  # noqa: E731
    learn = Learner(
        model, Loader(x, y, 32, shuffle=False), loss_func=F.cross_entropy, opt_func=opt_func, wd=0.1
    )
    grads = {}

    class Grab(Callback):
        def after_backward(self, learn):
            grads.update({k: p.grad.clone() for k, p in learn.model.named_parameters()})

    learn.fit(1, 0.5, cbs=[Grab()])
    end = learn.model.state_dict()
    for k, g in grads.items():
        decay = 0.1 if k in ("0.weight", "3.weight") else 0.0
        expected = start[k] * (1 - 0.5 * decay) - 0.5 * g
        assert torch.allclose(end[k], expected, atol=1e-6), k


def test_freeze_trains_only_the_head_and_bn():
    model = _model()
    split = lambda m: [list(m[0].parameters()) + list(m[1].parameters()), list(m[3].parameters())]  # noqa: E731
    x, y = _data()
    learn = Learner(model, Loader(x, y, 64), loss_func=F.cross_entropy, splitter=split)
    first = model[0].weight.detach().clone()
    bn = model[1].weight.detach().clone()
    learn.freeze()
    learn.fit_one_cycle(1, 0.1)
    assert torch.equal(first, model[0].weight) and not torch.equal(bn, model[1].weight)
    learn.unfreeze()
    learn.fit_one_cycle(1, 0.1)
    assert not torch.equal(first, model[0].weight)


def test_clip_and_bf16_autocast_train():
    learn = _learner(cbs=[GradientClip(0.5), MixedPrecision()], n=256, bs=32)
    learn.fit_one_cycle(4, 0.3)
    assert learn.recorder.rows[-1]["accuracy"] > 0.6
    assert learn.scaler is None  # restored after fit


def test_adam_beta1_is_cycled_and_wd_reaches_adamw():
    from onecycle import adamw

    learn = _learner(opt_func=adamw, wd=0.01)
    learn.fit_one_cycle(1, 1e-2)
    assert learn.recorder.moms == sample(one_cycle_moms(), 8)
    assert learn.opt.param_groups[0]["betas"][1] == 0.99


def test_fit_clr_and_sgdr_and_start_epoch():
    learn = _learner(n=256, bs=32)
    learn.fit_clr(4, 0.01, 0.1, step_size=4, mode="triangular2")
    lrs = learn.recorder.lrs
    assert lrs[0] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.055)  # second cycle at half amplitude
    learn.fit_sgdr(2, 1, lr_max=0.1, cycle_mult=2)
    assert len(learn.recorder.rows) == 3
    learn.fit_one_cycle(4, 0.1, start_epoch=2)
    assert learn.recorder.lrs == sample(one_cycle(0.1), 32)[16:]


def test_validate_and_get_preds():
    learn = _learner()
    res = learn.validate()
    assert set(res) == {"valid_loss", "accuracy"}
    preds, targets = learn.get_preds()
    assert preds.shape == (256, 4) and targets.shape == (256,)
    assert accuracy(preds, targets).item() == pytest.approx(res["accuracy"])


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: Learner("x", [1], loss_func=F.cross_entropy), "model"),
        (lambda: Learner(_model(), [], loss_func=F.cross_entropy), "train_data"),
        (lambda: Learner(_model(), iter([1]), loss_func=F.cross_entropy), "train_data"),
        (lambda: Learner(nn.ReLU(), [1], loss_func=F.cross_entropy), "model"),
        (lambda: _learner(wd=-1.0), "wd"),
        (lambda: _learner().fit(0), "n_epoch"),
        (lambda: _learner().fit_one_cycle(1, lr_max=float("nan")), "lr_max"),
        (lambda: _learner().fit_one_cycle(1, pct_start=1.5), "pct_start"),
        (lambda: _learner().fit_one_cycle(2, start_epoch=2), "start_epoch"),
        (lambda: _learner().fit_clr(1, 0.1, 0.01), "max_lr"),
        (lambda: Loader(torch.zeros(10, 2), torch.zeros(10), 11), "batch_size"),
    ],
)
def test_bad_input_names_the_parameter(make, name):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.name == name


def test_fine_tune_freezes_then_unfreezes_with_discriminative_lrs():
    model = _model()
    split = lambda m: [list(m[0].parameters()) + list(m[1].parameters()), list(m[3].parameters())]  # noqa: E731
    x, y = _data()
    learn = Learner(model, Loader(x, y, 64), loss_func=F.cross_entropy, splitter=split)
    first = model[0].weight.detach().clone()
    learn.fine_tune(1, base_lr=0.02, freeze_epochs=1)
    per_step = learn.recorder.hypers["lr"]  # the unfrozen fit
    n = len(per_step)
    head = sample(one_cycle(0.01, div=5.0, pct_start=0.3), n)  # base_lr / 2 for the head
    body = sample(one_cycle(0.01 / 100, div=5.0, pct_start=0.3), n)  # / lr_mult for the body
    assert [v[1] for v in per_step] == pytest.approx(head, rel=1e-12)
    assert [v[0] for v in per_step] == pytest.approx(body, rel=1e-12)
    assert not torch.equal(first, model[0].weight)
    assert all(p.requires_grad for p in model.parameters())


def test_non_finite_gradient_stops_before_the_step_when_checked():
    from onecycle import NonFiniteGuard

    class InfGrad(Callback):
        order = -1  # before the guard's check

        def after_backward(self, learn):
            if learn.iter == 2:
                next(learn.model.parameters()).grad[0, 0] = float("inf")

    snap = Snapshot()
    learn = _learner(cbs=[InfGrad(), snap, NonFiniteGuard(check_grads=True)])
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm"):
        learn.fit(1, 0.1)
    assert snap.steps == 2
    for k, v in learn.model.named_parameters():
        assert torch.equal(v, snap.state[k]), k
