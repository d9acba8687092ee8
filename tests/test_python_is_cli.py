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


def _fashion_or_skip() -> None:
    from conftest import running_in_ci

    from onecycle.data import find_fashion_mnist

    if find_fashion_mnist() is None and not running_in_ci():  # CI installs it (.ci/run)
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def test_the_best_recipe_is_the_fast_one_with_its_changes():
    from onecycle.config import BEST

    fast = FitConfig(dataset="fashion-mnist", out=None).resolved()
    best = FitConfig(dataset="fashion-mnist", recipe="best", out=None).resolved()
    assert (fast.crop_pad, fast.hflip, fast.tta) == (0, False, None)
    assert {k: getattr(best, k) for k in BEST["fashion-mnist"]} == BEST["fashion-mnist"]
    assert (best.lr_max, best.opt, best.bs) == (fast.lr_max, fast.opt, fast.bs)
    mine = FitConfig(dataset="fashion-mnist", recipe="best", crop_pad=0, hflip=False,
                     tta="none", epochs=3, out=None).resolved()  # fmt: skip
    assert (mine.crop_pad, mine.hflip, mine.tta, mine.epochs) == (0, False, None, 3)
    r = onecycle.recipe("fashion-mnist", "best")
    assert (r.model, r.epochs, r.crop_pad, r.hflip, r.tta) == (
        best.model, best.epochs, best.crop_pad, best.hflip, best.tta)  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "param"),
    [({"dataset": "mnist1d", "recipe": "best"}, "recipe"), ({"recipe": "good"}, "recipe"),
     ({"tta": "rotate"}, "tta"), ({"crop_pad": -1}, "crop_pad"), ({"hflip": "yes"}, "hflip")],
)  # fmt: skip
def test_a_bad_recipe_or_augmentation_is_refused_naming_it(kw, param):
    with pytest.raises(ConfigError, match=rf"^{param}="):
        FitConfig(**{"dataset": "fashion-mnist", "out": None, **kw}).resolved()


def test_the_cli_refuses_a_best_recipe_it_does_not_have(capsys):
    assert main(["fit", "--dataset", "mnist1d", "--recipe", "best", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe" in err[0] and "fashion-mnist" in err[0], err


@pytest.mark.slow
def test_the_best_recipe_reports_its_test_time_augmentation_and_python_trains_the_same(tmp_path):
    _fashion_or_skip()
    out = io.StringIO()
    args = ["fit", "--dataset", "fashion-mnist", "--recipe", "best", "--epochs", "1",
            "--train-samples", "1000", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    import json

    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    assert final["tta"]["views"] == "flip+shift" and 0 <= final["tta"]["test_accuracy"] <= 1
    assert "test-time augmentation (flip+shift)" in out.getvalue()
    learn = onecycle.recipe("fashion-mnist", "best").learner(train_samples=1000)
    learn.fit_one_cycle(1, 0.2)
    assert weights_sha256(learn.model) == final["weights_sha256"]
    assert learn.validate(tta="flip+shift")["accuracy"] == final["tta"]["test_accuracy"]
