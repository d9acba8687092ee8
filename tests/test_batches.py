"""The Learner and the range test take any batch: dicts (Hugging Face style), 3-tuples
through ``split_batch``, models that return tuples or dicts; a batch they cannot read is
refused with an error naming the hook, never half-read."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onecycle
from onecycle import ConfigError, Learner, accuracy
from onecycle.data import Loader


def _data(n: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


class _Output(OrderedDict):
    """Like transformers' ModelOutput: a mapping with attribute access."""

    __getattr__ = OrderedDict.__getitem__


class HFLike(nn.Module):
    """Keyword inputs, optional labels, an output with ``loss`` and ``logits``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.net(input_ids * (attention_mask if attention_mask is not None else 1))
        out = _Output(logits=logits)
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
            out.move_to_end("loss", last=False)
        return out


class DictBatches:
    """A DataLoader-like iterable of HF-style dict batches."""

    def __init__(self, x, y, bs):
        self.x, self.y, self.bs = x, y, bs

    def __len__(self):
        return (len(self.x) + self.bs - 1) // self.bs

    def __iter__(self):
        for i in range(0, len(self.x), self.bs):
            sl = slice(i, i + self.bs)
            yield {"input_ids": self.x[sl], "attention_mask": torch.ones_like(self.x[sl]),
                   "labels": self.y[sl]}  # fmt: skip


def test_dict_batches_train_validate_and_score_with_the_models_own_loss():
    torch.manual_seed(0)
    x, y = _data()
    learn = Learner(HFLike(), DictBatches(x, y, 32), DictBatches(x, y, 128), loss_func=None,
                    metrics=[accuracy])  # fmt: skip
    learn.fit_one_cycle(3, 0.1)
    assert learn.recorder.rows[-1]["accuracy"] > 0.9
    preds, targets = learn.get_preds()
    assert preds.shape == (512, 2) and torch.equal(targets, y)


def test_dict_batches_with_a_loss_function_on_the_logits_match_the_models_loss():
    torch.manual_seed(0)
    x, y = _data()
    a = Learner(HFLike(), DictBatches(x, y, 64), loss_func=None)
    torch.manual_seed(0)
    b = Learner(HFLike(), DictBatches(x, y, 64), loss_func=F.cross_entropy)
    a.fit_one_cycle(1, 0.05)
    b.fit_one_cycle(1, 0.05)
    assert a.recorder.losses == pytest.approx(b.recorder.losses, rel=1e-6)


def test_the_range_test_runs_on_dict_batches_through_the_learner_and_alone():
    torch.manual_seed(0)
    x, y = _data(1024)
    learn = Learner(HFLike(), DictBatches(x, y, 32), loss_func=None)
    res = learn.lr_find(num_it=40)
    assert len(res.lrs) >= 10 and all(v == v for v in res.losses)
    model = HFLike()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    res2 = onecycle.range_test(model, opt, None, DictBatches(x, y, 32), num_it=40)
    assert len(res2.losses) >= 10


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, xa, xb):
        return self.head(torch.relu(self.a(xa) + self.b(xb)))


def test_a_three_tuple_is_refused_by_default_naming_the_hook():
    x, y = _data()
    batches = [(x[i : i + 32, :3], x[i : i + 32, 3:], y[i : i + 32]) for i in range(0, 512, 32)]
    learn = Learner(TwoInputs(), batches, loss_func=F.cross_entropy)
    with pytest.raises(ConfigError, match=r"split_batch=.*a tuple of 3 elements"):
        learn.fit_one_cycle(1, 0.1)


def test_a_three_tuple_trains_with_split_batch_and_validates():
    torch.manual_seed(0)
    x, y = _data()
    batches = [(x[i : i + 32, :3], x[i : i + 32, 3:], y[i : i + 32]) for i in range(0, 512, 32)]
    learn = Learner(TwoInputs(), batches, batches, loss_func=F.cross_entropy, metrics=[accuracy],
                    split_batch=lambda b: ((b[0], b[1]), b[2]))  # fmt: skip
    learn.fit_one_cycle(4, 0.1)
    assert learn.recorder.rows[-1]["accuracy"] > 0.85
    assert learn.lr_find(num_it=20).losses


def test_the_range_test_never_drops_a_third_element():
    x, y = _data()
    model = TwoInputs()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(x[:32, :3], x[:32, 3:], y[:32])]
    with pytest.raises(ConfigError, match="a tuple of 3 elements"):
        onecycle.range_test(model, opt, F.cross_entropy, batches, num_it=5)
    step = onecycle.Step(lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]))
    assert onecycle.range_test(model, opt, step, batches, num_it=5).losses


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(6, 2)

    def forward(self, x):
        logits = self.net(x)
        return logits, logits.pow(2).mean()  # (prediction, auxiliary)


def test_a_model_returning_a_tuple_is_scored_on_its_first_element():
    torch.manual_seed(0)
    x, y = _data()
    learn = Learner(TupleOut(), Loader(x, y, 32), Loader(x, y, 256), loss_func=F.cross_entropy,
                    metrics=[accuracy])  # fmt: skip
    learn.fit_one_cycle(3, 0.2)
    assert learn.recorder.rows[-1]["accuracy"] > 0.9


def test_without_a_target_a_loss_function_or_metrics_are_refused_clearly():
    x, _ = _data(64)
    no_labels = [{"input_ids": x[:32]}]
    learn = Learner(HFLike(), no_labels, loss_func=F.cross_entropy)
    with pytest.raises(ConfigError, match="without a target"):
        learn.fit_one_cycle(1, 0.1)
    learn = Learner(HFLike(), no_labels, loss_func=None)
    with pytest.raises(ConfigError, match="no 'loss'"):
        learn.fit_one_cycle(1, 0.1)

    class SelfSupervised(nn.Module):  # its loss needs no labels; a metric still would
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(6, 6)

        def forward(self, input_ids):
            recon = self.net(input_ids)
            return {"loss": F.mse_loss(recon, input_ids), "logits": recon}

    learn = Learner(SelfSupervised(), no_labels, loss_func=None, metrics=[accuracy])
    learn.fit_one_cycle(1, 0.01)  # trains on its own loss...
    with pytest.raises(ConfigError, match=r"metrics=\['accuracy'\].*without a target"):
        learn.validate(no_labels)  # ...but accuracy has nothing to compare with


def test_split_batch_must_be_callable():
    x, y = _data(64)
    with pytest.raises(ConfigError, match="split_batch"):
        Learner(nn.Linear(6, 2), Loader(x, y, 32), loss_func=F.cross_entropy, split_batch=3)
