"""Python = CLI: the data sets' recipes are reachable from Python, and a Learner built from
one trains exactly what ``onecycle fit`` trains; the command says what it resolved before
training, and its ``--help`` shows each recipe's defaults."""

from __future__ import annotations

import contextlib
import io

import pytest

import onecycle
from onecycle.cli import main
from onecycle.config import RECIPES, FitConfig
from onecycle.errors import ConfigError
from onecycle.run import run_fit, weights_sha256


def test_a_recipe_is_the_commands_defaults():
    for name, values in RECIPES.items():
        r = onecycle.recipe(name)
        assert {k: getattr(r, k) for k in values} == values
    with pytest.raises(ConfigError, match=r"^dataset='cifar' is invalid: expected one of"):
        onecycle.recipe("cifar")


@pytest.mark.slow
def test_a_learner_from_the_recipe_trains_what_the_command_trains():
    r = onecycle.recipe("mnist1d")
    cli = run_fit(FitConfig(dataset="mnist1d", epochs=2, train_samples=1000, out=None))
    learn = r.learner(train_samples=1000)
    learn.fit_one_cycle(2, r.lr_max)
    assert weights_sha256(learn.model) == cli.metrics["final"]["weights_sha256"]
    assert learn.validate()["accuracy"] == cli.metrics["final"]["test_accuracy"]


def test_fit_prints_the_configuration_it_resolved_before_training(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["fit", "--epochs", "1", "--train-samples", "300", "--out", str(tmp_path),
                   "--no-progress"])  # fmt: skip
    assert rc == 0
    first = out.getvalue().splitlines()[0]
    assert first.startswith("config: mnist1d, model cnn1d-bn, adamw, lr_max 0.01, batch 100, "
                            "wd 0.01, 1 epoch, one-cycle (div 25")  # fmt: skip


def test_fit_help_shows_each_recipes_defaults():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(out.getvalue().split())
    assert "default 5" not in text  # the recipe says 15 for MNIST-1D
    assert "passes over the training data (default: the recipe's: fashion-mnist 5, mnist1d 15" \
        in text  # fmt: skip
    assert "mnist1d: --model cnn1d-bn --opt adamw --lr-max 0.01 --bs 100 --wd 0.01 --epochs 15" \
        in text  # fmt: skip
