"""The onecycle command, end to end: real runs, files written, and usage errors."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from onecycle import Callback
from onecycle import run as run_module
from onecycle.cli import main
from onecycle.config import RECIPES
from onecycle.data import find_fashion_mnist


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "onecycle", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=600,
    )  # fmt: skip


def test_fit_mnist1d_writes_metrics_and_plots(tmp_path):
    r = _run("fit", "--dataset", "mnist1d", "--epochs", "6", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "train_loss" in r.stdout and "test accuracy" in r.stdout
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["config"]["schedule"] == "one-cycle" and m["config"]["model"] == "cnn1d-bn"
    assert len(m["epochs"]) == 6
    steps = m["final"]["optimizer_steps"]
    assert len(m["steps"]["lr"]) == len(m["steps"]["momentum"]) == steps == 6 * 40
    lr_max = RECIPES["mnist1d"]["lr_max"]
    assert m["steps"]["lr"][0] == pytest.approx(lr_max / 25)
    assert m["steps"]["lr"][-1] == pytest.approx(lr_max / 1e5, rel=1e-12)
    assert m["final"]["test_accuracy"] > 0.75
    assert len(m["final"]["weights_sha256"]) == 64
    for png in ("loss.png", "schedule.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("schedule", ["clr", "const", "step", "exp", "time", "sgdr"])
def test_every_schedule_runs(tmp_path, schedule):
    rc = main(
        [
            "fit",
            "--dataset",
            "mnist1d",
            "--epochs",
            "2",
            "--schedule",
            schedule,
            "--train-samples",
            "800",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["config"]["schedule"] == schedule and len(m["steps"]["lr"]) == 16


def _quick_sha(out, seed):
    args = ["fit", "--epochs", "1", "--train-samples", "500", "--no-progress"]
    assert main([*args, "--seed", str(seed), "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())["final"]["weights_sha256"]


def test_same_seed_same_weights(tmp_path):
    first = _quick_sha(tmp_path / "a", seed=7)
    assert _quick_sha(tmp_path / "b", seed=7) == first
    assert _quick_sha(tmp_path / "c", seed=8) != first


def test_resume_from_a_file_and_a_bad_checkpoint_is_one_line(tmp_path):
    args = [
        "fit",
        "--epochs",
        "2",
        "--train-samples",
        "400",
        "--no-progress",
        "--checkpoint-every",
        "3",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    done = json.loads((tmp_path / "metrics.json").read_text())["final"]["weights_sha256"]
    first = sorted((tmp_path / "checkpoints").glob("*.pt"))[0]
    assert main([*args, "--resume-from", str(first)]) == 0
    again = json.loads((tmp_path / "metrics.json").read_text())["final"]["weights_sha256"]
    assert again == done
    first.write_bytes(first.read_bytes()[:100])
    r = _run(*args, "--resume-from", str(first))
    assert r.returncode == 2 and "torn" in r.stderr and "Traceback" not in r.stderr


def test_factory_trains_the_users_model(tmp_path):
    (tmp_path / "mymodel.py").write_text(
        textwrap.dedent("""
        import torch
        from onecycle.data import Loader

        def make():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(400, 4, generator=g)
            y = (x[:, 0] + x[:, 1] > 0).long()
            model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, 2))
            return model, Loader(x, y, 40), Loader(x, y, 200, shuffle=False), \\
                torch.nn.functional.cross_entropy
    """)
    )
    r = _run(
        "fit",
        "--factory",
        "mymodel:make",
        "--epochs",
        "4",
        "--lr-max",
        "0.5",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["facts"]["factory"] == "mymodel:make" and m["final"]["test_accuracy"] > 0.9


@pytest.mark.parametrize(
    "args,needle",
    [
        (["fit", "--epochs", "0"], "epochs=0"),
        (["fit", "--lr-max", "-1"], "lr_max=-1.0"),
        (["fit", "--lr-max", "nan"], "lr_max=nan"),
        (["fit", "--pct-start", "1.5"], "pct_start=1.5"),
        (["fit", "--div-final", "0.5"], "div_final=0.5"),
        (["fit", "--bs", "5000"], "batch_size=5000"),
        (["fit", "--schedule", "warp"], "invalid choice"),
        (["fit", "--factory", "nomodule:make"], "factory"),
        (["fit", "--factory", "nocolon"], "factory"),
        (["fit", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "not found"),
        (["fit", "--wd", "-1"], "wd=-1.0"),
        (["fit", "--wd", "lots"], "'auto'"),
        (["fit", "--wd", "auto", "--schedule", "const"], "wd='auto'"),
        (["schedule", "--lr-max", "0"], "lr_max=0.0"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, needle, tmp_path):
    r = _run(*args, "--out", str(tmp_path)) if args[0] in ("fit", "schedule") else _run(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_help_explains_the_options():
    r = _run("fit", "--help")
    assert r.returncode == 0
    text = " ".join(re.sub(r"-\n\s+", "-", r.stdout).split())  # undo argparse's wrapping
    for word in ("--lr-max", "--pct-start", "--div-final", "--moms", "super-convergence"):
        assert word in text


def test_other_libraries_info_logs_stay_off_stderr_ours_do_not(tmp_path):
    """A fresh matplotlib announces "generated new fontManager" at INFO; the CLI's stderr
    carries onecycle's own INFO lines, and other libraries' warnings and errors only."""
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}  # matplotlib's first run
    code = (
        "import logging, sys\n"
        "from onecycle.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "logging.getLogger('onecycle.run').info('ours')\n"
        "logging.getLogger('somelib').info('theirs')\n"
        "logging.getLogger('somelib').warning('their warning')\n"
        "sys.exit(rc)\n"
    )
    argv = ["schedule", "--steps", "50", "--lr-max", "0.1", "--out", str(tmp_path / "s")]
    out = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and (tmp_path / "s" / "schedule.png").is_file(), out.stderr
    assert out.stderr.splitlines() == ["onecycle: ours", "onecycle: their warning"]


def test_schedule_preview(tmp_path):
    assert (
        main(
            [
                "schedule",
                "--schedule",
                "clr",
                "--clr-mode",
                "triangular2",
                "--steps",
                "200",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    values = json.loads((tmp_path / "schedule.json").read_text())["values"]["lr"]
    assert len(values) == 200 and max(values) == pytest.approx(0.1)


def test_lr_find_prints_a_table_and_writes_json_and_png(tmp_path):
    r = _run("lr-find", "--dataset", "mnist1d", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for rule in ("valley", "steep", "minimum", "clr_bounds", "lr_max"):
        assert rule in r.stdout
    d = json.loads((tmp_path / "lr_find.json").read_text())
    assert len(d["lrs"]) == len(d["losses"]) > 50 and d["recommended"]["lr"] > 0
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    r = _run(
        "lr-find",
        "--dataset",
        "mnist1d",
        "--num-it",
        "60",
        "--mode",
        "linear",
        "--end-lr",
        "1",
        "--json",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0 and json.loads(r.stdout)["mode"] == "linear"


def test_fit_lr_max_auto_searches_then_trains_at_the_pick(tmp_path, capsys):
    assert (
        main(["fit", "--lr-max", "auto", "--epochs", "6", "--no-progress", "--out", str(tmp_path)])
        == 0
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    auto = m["auto"]
    pick = auto["lr_max"]
    assert m["config"]["lr_max"] == pick
    assert min(auto["candidates"]) <= pick <= max(auto["candidates"])
    assert auto["probes"] and auto["compute_ratio"] <= 0.3 + 1e-9  # the default budget
    assert m["final"]["optimizer_steps"] == auto["total_steps"]
    assert max(m["steps"]["lr"]) == pytest.approx(pick, rel=1e-2)
    out = capsys.readouterr().out
    assert "held-back loss" in out and "the search cost" in out


def test_fit_auto_budget_sets_what_the_search_spends(tmp_path):
    args = ["fit", "--lr-max", "auto", "--epochs", "6", "--no-progress"]
    for d, budget in zip("abc", ("0.1", "0.3", "1.0")):
        assert main([*args, "--auto-budget", budget, "--out", str(tmp_path / d)]) == 0
    small, default, large = (json.loads((tmp_path / d / "metrics.json").read_text())["auto"]
                             for d in "abc")  # fmt: skip
    assert small["compute_ratio"] <= 0.1 + 1e-9 < default["compute_ratio"] <= 0.3 + 1e-9
    assert 0.3 < large["compute_ratio"] <= 1.0 + 1e-9
    steps = [max((p["steps"] for p in a["probes"]), default=0) for a in (small, default)]
    assert steps[0] < steps[1]  # a larger budget buys longer probes
    assert not default["prefixes"] and len(large["prefixes"]) == 3  # and at 1.0 a duel
    assert "duel of prefixes" in large["reason"]


def test_fit_auto_budget_without_auto_is_a_usage_error(capsys):
    assert main(["fit", "--lr-max", "0.1", "--auto-budget", "0.3", "--no-progress"]) == 2
    assert "auto_budget" in capsys.readouterr().err


def test_fit_lr_max_auto_reports_a_rollback_when_the_run_at_the_pick_collapses(
    tmp_path, monkeypatch, capsys
):
    class Sabotage(Callback):  # not affects_update: the search's prefixes never see it
        fits, start = 0, None

        def before_fit(self, learn):
            self.fits += 1

        def after_step(self, learn):  # the first run, 5 steps after the prefix it continues
            if self.fits != 1:
                return
            if self.start is None:
                self.start = learn.scheduler.step_count - 1
            if learn.scheduler.step_count == self.start + 5:  # NaN weights: the next loss
                with torch.no_grad():
                    for p in learn.model.parameters():
                        p.fill_(float("nan"))

    fit = run_module._fit
    monkeypatch.setattr(
        run_module, "_fit", lambda learn, cfg, cbs: fit(learn, cfg, [*cbs, Sabotage()])
    )
    args = ["fit", "--model", "mlp", "--lr-max", "auto", "--epochs", "6", "--no-progress"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    auto = m["auto"]
    [r] = auto["rollbacks"]  # NonFiniteGuard stops the 6th step, before it is taken
    first = r["lr_max"]
    lower = sorted((c for c in auto["candidates"] if c < first), reverse=True)
    assert auto["lr_max"] == m["config"]["lr_max"] == lower[0]
    # steps the first run had from the search (a prefix it continued: none after probes)
    prefix = max((p["steps"] for p in auto["prefixes"] if p["lr_max"] == first), default=0)
    assert r["step"] == prefix + 5 and "non-finite" in r["reason"]
    assert max(m["steps"]["lr"]) == pytest.approx(lower[0], rel=1e-2)
    assert m["final"]["optimizer_steps"] == auto["total_steps"]  # the run that remains, whole
    line = f"lr_max={first:.3g} collapsed at step {prefix + 5} ({r['reason']}): run again lower"
    assert line in capsys.readouterr().out.splitlines()


def test_fit_wd_auto_end_to_end(tmp_path):
    r = _run("fit", "--dataset", "mnist1d", "--epochs", "2", "--lr-max", "auto", "--wd", "auto",
             "--no-progress", "--out", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "held-back loss" in r.stdout and "wd=" in r.stdout
    m = json.loads((tmp_path / "metrics.json").read_text())
    wd = m["auto_wd"]["wd"]
    assert wd in (0.0, 1e-5, 1e-4, 1e-3, 1e-2) and m["config"]["wd"] == wd
    assert len(m["auto_wd"]["probes"]) == 5


def test_demo_runs_the_whole_method(tmp_path):
    r = _run("demo", "--epochs", "5", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "range test" in r.stdout and "test accuracy" in r.stdout
    for f in ("lr_find.png", "loss.png", "schedule.png", "metrics.json"):
        assert (tmp_path / f).exists(), f


@pytest.mark.slow
def test_fit_on_real_fashion_mnist(tmp_path, in_ci):
    if find_fashion_mnist() is None:
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI (.ci/run installs it)")
        pytest.skip("Fashion-MNIST not installed")
    r = _run(
        "fit",
        "--dataset",
        "fashion-mnist",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--train-samples",
        "12000",
        "--lr-max",
        "0.1",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["facts"]["test_samples"] == 10000
    assert m["final"]["test_accuracy"] > 0.80
