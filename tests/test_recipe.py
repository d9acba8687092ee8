"""The data sets' default recipes: what `onecycle fit` runs with no other flags (models,
channels_last, bf16 autocast where native, label smoothing), and their fallbacks."""

import dataclasses
import functools
import json
import logging
import re

import pytest
import torch
import torch.nn.functional as F

from onecycle import config as C
from onecycle.cli import main
from onecycle.config import FitConfig, native_mixed_precision
from onecycle.data import find_fashion_mnist
from onecycle.models import get_model
from onecycle.run import build_learner, run_fit, run_lr_find


def _fashion(in_ci: bool) -> None:
    if find_fashion_mnist() is None:
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI (.ci/run installs it)")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def test_each_data_set_resolves_to_its_recipe():
    f = FitConfig(dataset="fashion-mnist", out=None).resolved()
    assert (f.model, f.opt, f.lr_max, f.bs, f.wd, f.epochs) == ("airnet", "sgd", 0.2, 256, 5e-3, 5)
    assert f.channels_last is True and f.label_smoothing == 0.1
    assert f.amp is native_mixed_precision()  # bf16 only where the CPU has it
    m = FitConfig(dataset="mnist1d", out=None).resolved()
    assert (m.model, m.opt, m.epochs, m.amp, m.channels_last, m.label_smoothing) == (
        "cnn1d-bn", "adamw", 15, False, False, 0.0)  # fmt: skip
    # what the user sets wins over the recipe
    g = FitConfig(dataset="fashion-mnist", out=None, model="cnn", amp=False,
                  channels_last=False, label_smoothing=0.0, epochs=2).resolved()  # fmt: skip
    assert (g.model, g.amp, g.channels_last, g.label_smoothing, g.epochs) == (
        "cnn", False, False, 0.0, 2)  # fmt: skip


def test_the_recipes_mixed_precision_is_dropped_where_the_cpu_has_no_bf16(monkeypatch, caplog):
    monkeypatch.setattr(C, "_cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="onecycle.config"):
        c = FitConfig(dataset="fashion-mnist", out=None).resolved()
    assert c.amp is False and "no native bf16" in caplog.text
    # asked for explicitly, it is kept (emulated bf16 is slower, but it is what was asked)
    assert FitConfig(dataset="fashion-mnist", out=None, amp=True).resolved().amp is True
    monkeypatch.setattr(C, "_cpu_has_bf16", lambda: True)
    assert FitConfig(dataset="fashion-mnist", out=None).resolved().amp is True


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("label_smoothing", 1.0, "[0, 1)"),
        ("label_smoothing", -0.1, "[0, 1)"),
        ("label_smoothing", "0.1", "[0, 1)"),
        ("amp", "yes", "True, False or None"),
        ("channels_last", 1, "True, False or None"),
    ],
)
def test_bad_recipe_values_are_refused_by_name(field, value, says):
    with pytest.raises(C.ConfigError, match=rf"{field}=.*{re.escape(says)}"):
        FitConfig(dataset="mnist1d", out=None, **{field: value}).resolved()


def test_label_smoothing_with_a_factory_is_refused_not_ignored(capsys):
    rc = main(["fit", "--factory", "x.py:make", "--label-smoothing", "0.1", "--out", "/tmp/x"])
    assert rc == 2
    assert "label_smoothing=0.1" in capsys.readouterr().err


def test_label_smoothing_is_the_loss_trained_on():
    learn, _ = build_learner(FitConfig(dataset="mnist1d", label_smoothing=0.3, out=None).resolved())
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert isinstance(learn.loss_func, functools.partial)
    want = F.cross_entropy(logits, y, label_smoothing=0.3)
    assert torch.equal(learn.loss_func(logits, y), want)
    assert not torch.equal(want, F.cross_entropy(logits, y))
    plain, _ = build_learner(FitConfig(dataset="mnist1d", out=None).resolved())
    assert plain.loss_func is F.cross_entropy


def test_mixed_precision_reaches_the_range_test():
    """`onecycle lr-find` sweeps the update `fit` would run: with --amp, under bf16."""
    cfg = FitConfig(dataset="mnist1d", train_samples=1000, out=None, progress=False)
    plain, _ = run_lr_find(dataclasses.replace(cfg, amp=False), num_it=15)
    bf16, _ = run_lr_find(dataclasses.replace(cfg, amp=True), num_it=15)
    assert plain.lrs == bf16.lrs
    assert plain.losses[0] != bf16.losses[0]  # the first step's loss is already computed in bf16


def test_the_new_models_fit_their_data_and_refuse_the_other_kind():
    assert get_model("airnet", (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert get_model("cnn1d-bn", (40,), 10)(torch.zeros(2, 40)).shape == (2, 10)
    with pytest.raises(C.ConfigError, match=r"model='airnet'.*sequence data"):
        get_model("airnet", (40,), 10)
    with pytest.raises(C.ConfigError, match=r"model='cnn1d-bn'.*image data"):
        get_model("cnn1d-bn", (1, 28, 28), 10)


def test_the_fashion_recipe_end_to_end_and_its_bit_exact_resume(tmp_path, in_ci):
    """No flags but a short run: airnet in channels_last, bf16 where native, label smoothing;
    a checkpoint of that run resumes to the same bits."""
    _fashion(in_ci)
    args = ["fit", "--dataset", "fashion-mnist", "--train-samples", "6000", "--epochs", "2",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    cfg = m["config"]
    assert (cfg["model"], cfg["channels_last"], cfg["label_smoothing"]) == ("airnet", True, 0.1)
    assert cfg["amp"] is native_mixed_precision()
    assert m["facts"]["params"] == 289130
    assert m["final"]["test_accuracy"] > 0.5  # 48 steps at the recipe's peak LR
    first = sorted((tmp_path / "a" / "checkpoints").glob("ckpt-e*.pt"))[0]  # after epoch 1
    out_b = tmp_path / "b"
    assert main([*args, "--resume-from", str(first), "--out", str(out_b)]) == 0
    again = json.loads((out_b / "metrics.json").read_text())
    assert again["final"]["weights_sha256"] == m["final"]["weights_sha256"]


def test_the_fast_recipe_model_is_built_channels_last(in_ci):
    _fashion(in_ci)
    cfg = FitConfig(dataset="fashion-mnist", train_samples=512, epochs=1, out=None,
                    progress=False)  # fmt: skip
    res = run_fit(cfg)

    def second_conv(model: torch.nn.Module) -> torch.Tensor:  # the first has 1 input channel
        return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1].weight

    cl = torch.channels_last
    assert second_conv(res.learner.model).is_contiguous(memory_format=cl)  # also after training
    plain = build_learner(dataclasses.replace(cfg, channels_last=False).resolved())[0]
    assert not second_conv(plain.model).is_contiguous(memory_format=cl)
