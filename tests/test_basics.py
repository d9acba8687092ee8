"""The basics of a first hour: save / load, predict, get_preds with an activation, summary,
EarlyStopping and SaveBest (resumable), and results that read at a glance (reprs)."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import (
    Callback,
    Checkpoint,
    CheckpointError,
    EarlyStopping,
    Learner,
    SaveBest,
    ScheduleLR,
    Scheduler,
    accuracy,
    adamw,
)
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.schedules import one_cycle, one_cycle_moms


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _learner(width=8, seed=0, **kw):
    x, y = _data()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
    kw.setdefault("loss_func", F.cross_entropy)
    return Learner(model, Loader(x, y, 32, shuffle=True, seed=1), Loader(x, y, 128, shuffle=False),
                   metrics=[accuracy], **kw)  # fmt: skip


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# --- save / load -------------------------------------------------------------------------------


def test_save_then_load_continues_training_exactly(tmp_path):
    a = _learner()
    a.fit_one_cycle(1, 0.1)
    path = a.save(tmp_path / "model.pt")
    assert path.is_file() and path.with_name("model.pt.manifest").is_file()
    b = _learner(seed=1)  # other initial weights, no optimizer yet
    assert not _same(a.model, b.model) and b.opt is None
    b.load(path)
    assert _same(a.model, b.model)
    assert b.opt is not None and len(b.opt.state) == len(a.opt.state)  # momentum buffers too
    assert b.recorder.rows == a.recorder.rows  # the history, for its plots
    a.fit_one_cycle(1, 0.1)
    b.fit_one_cycle(1, 0.1)
    assert _same(a.model, b.model)  # bit-identical: the optimizer state came back


def test_load_refuses_a_file_of_another_model_and_says_what_differs(tmp_path):
    a = _learner(width=8)
    path = a.save(tmp_path / "m.pt")
    b = _learner(width=16)
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"shapes differ: 0\.weight is \(8, 4\) in the file, "
                       r"\(16, 4\) here"):  # fmt: skip
        b.load(path)
    assert all(torch.equal(before[k], v) for k, v in b.model.state_dict().items())


def test_load_refuses_another_kind_of_optimizer_before_changing_anything(tmp_path):
    a = _learner()
    a.fit_one_cycle(1, 0.1)  # SGD
    path = a.save(tmp_path / "m.pt")
    b = _learner(opt_func=adamw, seed=3)
    b.fit_one_cycle(1, 0.01)
    w = b.model[0].weight.clone()
    with pytest.raises(CheckpointError, match=r"'momentum'.*another kind of optimizer"):
        b.load(path)
    assert torch.equal(b.model[0].weight, w)
    b.load(path, with_opt=False)  # the weights alone are fine
    assert _same(a.model, b.model)


def test_load_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    a = _learner()
    torch.save(a.model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a onecycle checkpoint"):
        a.load(tmp_path / "plain.pt")


def test_load_reads_a_checkpoint_the_callback_wrote(tmp_path):
    a = _learner()
    a.fit_one_cycle(2, 0.1, cbs=[Checkpoint(tmp_path / "ck")])
    newest = sorted((tmp_path / "ck").glob("ckpt-*.pt"))[-1]
    b = _learner(seed=5)
    b.load(newest)
    assert _same(a.model, b.model)


# --- predictions ------------------------------------------------------------------------------


def test_get_preds_with_an_activation_and_decoded_classes():
    learn = _learner()
    learn.fit_one_cycle(2, 0.2)
    raw, y = learn.get_preds()
    probs, y2, classes = learn.get_preds(activation="softmax", with_decoded=True)
    assert torch.equal(y, y2)
    assert torch.allclose(probs, raw.softmax(-1)) and torch.allclose(probs.sum(1), torch.ones(256))
    assert torch.equal(classes, raw.argmax(1))
    learn.model.train()
    auto, _ = learn.get_preds(activation="auto")  # cross-entropy: softmax
    assert torch.allclose(auto, probs)
    assert learn.model.training  # the model's mode is put back
    with pytest.raises(ConfigError, match=r"^activation='relu' is invalid"):
        learn.get_preds(activation="relu")


def test_activation_auto_follows_the_loss():
    x, y = _data()
    yb = y.float().unsqueeze(1)
    learn = Learner(nn.Linear(4, 1), Loader(x, yb, 32), Loader(x, yb, 128, shuffle=False),
                    loss_func=functools.partial(F.binary_cross_entropy_with_logits))  # fmt: skip
    learn.fit_one_cycle(2, 0.2)
    raw, _ = learn.get_preds()
    probs, _, classes = learn.get_preds(activation="auto", with_decoded=True)
    assert torch.allclose(probs, torch.sigmoid(raw))
    assert torch.equal(classes, (raw > 0).long())
    one = learn.predict(x[0])
    assert one.preds.shape == (1,) and one.decoded.item() == int(raw[0, 0] > 0)


def test_predict_one_input():
    learn = _learner()
    learn.fit_one_cycle(2, 0.2)
    x, _ = _data()
    raw, _ = learn.get_preds()
    pred = learn.predict(x[3])  # no batch dimension
    assert pred.decoded.item() == raw[3].argmax().item()
    assert torch.allclose(pred.preds, raw[3].softmax(-1), atol=1e-6)
    _, probs = learn.predict(x[3], activation=None)  # a named tuple
    assert torch.allclose(probs, raw[3], atol=1e-6)
    with pytest.raises(ConfigError, match=r"^x='str' is invalid"):
        learn.predict("not a tensor")


def test_predict_a_model_of_several_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(3, 2)

        def forward(self, u, v):
            return self.a(u) + self.b(v)

    u, v = torch.randn(64, 4), torch.randn(64, 3)
    y = torch.zeros(64, dtype=torch.long)
    learn = Learner(Two(), [((u, v), y)], loss_func=F.cross_entropy)
    out = learn.predict((u[0], v[0]), activation=None)
    assert torch.allclose(out.preds, learn.model(u[:1], v[:1])[0])


# --- summary ----------------------------------------------------------------------------------


def test_summary_lists_layers_shapes_counts_and_the_optimizer():
    learn = _learner()
    learn.freeze_to(0)
    learn.model[0].weight.requires_grad_(False)  # one layer partly frozen
    before = learn.valid_data.state_dict(), torch.get_rng_state()
    s = learn.summary()
    assert [r[:4] for r in s.rows] == [
        ("0", "Linear", "[128, 8]", 40),
        ("1", "ReLU", "[128, 8]", 0),
        ("2", "Linear", "[128, 2]", 18),
    ]
    assert [r[4] for r in s.rows] == ["partly", "", "yes"]
    assert (s.total, s.trainable) == (58, 26)
    text = str(s)
    assert "58 parameters, 26 trainable, 32 frozen" in text and "made at the first fit" in text
    assert learn.valid_data.state_dict() == before[0]  # the loader where it was
    assert torch.equal(torch.get_rng_state(), before[1])
    learn.fit_one_cycle(1, 0.1)
    assert "group 0: 58 parameters (32 frozen), lr" in str(learn.summary())


# --- EarlyStopping and SaveBest ---------------------------------------------------------------


class _Weights(Callback):
    order = 91

    def before_fit(self, learn):
        self.per_epoch = {}

    def after_epoch(self, learn):
        self.per_epoch[learn.epoch] = {k: v.clone() for k, v in learn.model.state_dict().items()}


def test_early_stopping_waits_patience_epochs_then_stops():
    stop = EarlyStopping("score", patience=2, min_delta=0.02)  # max: not a loss
    learn = _learner(cbs=[stop])
    values = [0.5, 0.9, 0.91, 0.88, 0.95, 0.99]

    def score(pred, target):
        return torch.tensor(values[learn.epoch])

    learn.metrics = [score]
    learn.fit_one_cycle(6, 0.05)
    # 0.9 at epoch 1 is the best: 0.91 is not 0.02 better, 0.88 is worse: patience spent
    assert [r["score"] for r in learn.recorder.rows] == pytest.approx(values[:4])
    assert (stop.stopped_epoch, stop.best_epoch, stop.best) == (3, 1, pytest.approx(0.9))


def test_monitor_must_be_a_column_of_the_epoch_row():
    learn = _learner(cbs=[EarlyStopping("val_acc")])
    with pytest.raises(ConfigError, match=r"^monitor='val_acc' is invalid: expected a column.*"
                       r"'accuracy'"):  # fmt: skip
        learn.fit_one_cycle(1, 0.1)


def test_save_best_restores_the_best_epochs_weights():
    best, seen = SaveBest("valid_loss"), _Weights()
    learn = _learner(cbs=[best, seen])
    learn.fit(6, 3.0)  # a constant LR far too high: the loss jumps around
    losses = [r["valid_loss"] for r in learn.recorder.rows]
    k = losses.index(min(losses))
    assert best.best_epoch == k and k != len(losses) - 1  # the point: the last is not the best
    assert all(torch.equal(v, seen.per_epoch[k][n]) for n, v in learn.model.state_dict().items())


class _Crash(Callback):
    """A kill at the end of ``epoch``, after the checkpoint was written."""

    order = 99

    def __init__(self, epoch):
        self.epoch = epoch

    def after_epoch(self, learn):
        if learn.epoch == self.epoch:
            raise KeyboardInterrupt


def test_early_stopping_and_save_best_resume_as_the_whole_run(tmp_path):
    def run(cbs, resume=None):
        stop, best = EarlyStopping("valid_loss", patience=2, min_delta=0.02), SaveBest()
        learn = _learner(cbs=[stop, best, Checkpoint(tmp_path / "ck"), *cbs])
        learn.fit(12, 0.5, resume=resume)
        return learn, stop, best

    whole, stop, best = run([])
    assert stop.stopped_epoch is not None  # it does stop in this run
    for p in (tmp_path / "ck").iterdir():
        p.unlink()
    with pytest.raises(KeyboardInterrupt):
        run([_Crash(stop.stopped_epoch - 1)])
    resumed, stop2, best2 = run([], resume="auto")
    assert (stop2.stopped_epoch, stop2.best_epoch, best2.best_epoch) == (
        stop.stopped_epoch, stop.best_epoch, best.best_epoch)  # fmt: skip
    assert _same(whole.model, resumed.model)  # the same best weights put back


def test_a_resume_that_lost_a_callbacks_state_says_so(tmp_path, caplog):
    learn = _learner(cbs=[Checkpoint(tmp_path / "ck")])
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3, 0.1, cbs=[_Crash(0)])
    learn = _learner(cbs=[Checkpoint(tmp_path / "ck"), EarlyStopping()])
    learn.fit(3, 0.1, resume="auto")
    assert any("no state for the EarlyStopping callback" in r.getMessage() for r in caplog.records)


# --- results that read at a glance ------------------------------------------------------------


def test_the_learner_reads_at_a_glance():
    learn = _learner()
    text = repr(learn)
    assert text.splitlines()[0] == "Learner: Sequential, 58 parameters (all trainable) in 1 " \
                                   "param group, on cpu"  # fmt: skip
    assert "8 training batches, 2 validation batches; loss cross_entropy; metrics accuracy" in text
    assert "not trained yet" in text
    learn.fit_one_cycle(2, 0.1)
    text = repr(learn)
    assert "last fit: 2 epochs, optimizer step 16 of 16; epoch 1: train_loss" in text
    assert len(text.splitlines()) == 4 and len(text) < 500
    rec = repr(learn.recorder)
    assert rec.startswith("Recorder: 2 epochs, 16 optimizer steps, 16 batches")
    assert "valid_loss" in rec and len(rec) < 300
    assert learn.recorder._repr_html_().count("<tr>") == 3


def test_schedulers_and_schedules_read_at_a_glance():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
    sched = ScheduleLR(opt, {"lr": one_cycle(1.0), "momentum": one_cycle_moms()}, 100)
    for _ in range(25):
        opt.step()
        sched.step()
    text = repr(sched)
    assert text.splitlines()[0] == "ScheduleLR: step 25 of 100 (25%) on SGD, 1 param group"
    assert "lr" in text and "1" in text.splitlines()[1] and len(text) < 400
    assert "<svg" in sched._repr_html_() and "<circle" in sched._repr_html_()  # where it is
    core = Scheduler(opt, {"lr": one_cycle(1.0)}, 10)
    assert repr(core).startswith("Scheduler: step 0 of 10 (0%) on SGD")
    html = one_cycle(0.1)._repr_html_()
    assert html.count("<svg") == 1 and "Join(" in html and "1e-06 .. 0.1" in html


def test_get_preds_on_data_that_gives_no_batches_says_why():
    learn = _learner()
    for _ in learn.valid_data:
        break  # a Loader left part-way: the next pass goes on from there
    next(iter(learn.valid_data))
    with pytest.raises(ConfigError, match=r"^data='an iterable that gave no batches'.*set_epoch"):
        learn.get_preds()
    learn.valid_data.set_epoch(0)
    assert len(learn.get_preds()[0]) == 256
