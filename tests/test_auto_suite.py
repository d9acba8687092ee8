"""The lr_max="auto" suite's --quick mode, end to end (benchmarks/auto_lr/suite.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "auto_lr" / "suite.py"


@pytest.mark.slow
def test_quick_suite_runs_two_pairs_and_reports_gaps(tmp_path):
    out, md = tmp_path / "quick.json", tmp_path / "t.md"
    r = subprocess.run(
        [sys.executable, str(SUITE), "--quick", "--json", str(out), "--table", str(md)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert set(summary) == {"mnist1d-cnn-adamw", "charlm-tf-adamw"}
    assert summary["mnist1d-cnn-adamw"]["calibration"] is True
    assert summary["charlm-tf-adamw"]["calibration"] is False
    for pair in summary.values():
        assert len(pair["grid"]) == 5  # every other point of the x sqrt(10) grid
        auto = pair["arms"]["auto"]
        assert auto["failed"] == 0 and auto["gap"] is not None and auto["compute_ratio"] > 0
    mnist = summary["mnist1d-cnn-adamw"]
    assert mnist["grid_best"]["score"] > 80  # accuracy in %
    assert mnist["arms"]["auto"]["gap"] < 10
    assert summary["charlm-tf-adamw"]["metric"] == "bpc"
    text = md.read_text()
    assert "held out" in text and "calibration" in text and "charlm-tf-adamw" in text


def test_rules_score_fixed_choices_among_the_recorded_candidates(tmp_path):
    """picks.py --rules on a hand-made suite JSON: each choice's regret is the grid's run
    at that LR and seed against the grid's best mean (accuracy points)."""
    grid = {1.0: 50.0, 0.316228: 90.0, 0.1: 97.0, 0.031623: 96.0, 0.01: 80.0}
    runs = [{"pair": "digits-mlp-sgd", "arm": "grid", "param": lr, "seed": s, "score": acc}
            for lr, acc in grid.items() for s in (0, 1)]  # fmt: skip
    probes = [{"lr_max": c, "loss": loss} for c, loss in ((1.0, 2.0), (0.316228, 0.5), (0.1, 0.6))]
    runs.append({"pair": "digits-mlp-sgd", "arm": "auto", "seed": 0, "score": 95.0,
                 "candidates": [1.0, 0.316228, 0.1], "probes": probes})  # fmt: skip
    src = tmp_path / "suite.json"
    src.write_text(json.dumps({"runs": runs}))
    out, md = tmp_path / "rules.json", tmp_path / "rules.md"
    r = subprocess.run(
        [sys.executable, str(SUITE.parent / "picks.py"), "--rules", str(src), "--json", str(out),
         "--table", str(md)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = {row["rule"]: row["regret"] for row in json.loads(out.read_text())["runs"]}
    assert got == pytest.approx({"top": 47.0, "second": 7.0, "third": 0.0,
                                 "best probe": 7.0, "best probe x3.16": 47.0})  # fmt: skip
    assert "| **within target** | | 0/1 | 0/1 | 1/1 | 0/1 | 0/1 |" in md.read_text()


def test_compare_scores_both_arms_on_the_seeds_both_ran(tmp_path):
    grid = {0.1: (90.0, 92.0), 0.01: (80.0, 80.0)}
    runs = [{"pair": "digits-mlp-sgd", "arm": "grid", "param": lr, "seed": s, "score": acc}
            for lr, accs in grid.items() for s, acc in enumerate(accs)]  # fmt: skip
    for s, acc in enumerate((91.0, 90.8, 60.0, 60.0, 60.0)):  # seeds 2-4: not compared
        runs.append({"pair": "digits-mlp-sgd", "arm": "auto", "seed": s, "score": acc,
                     "lr": 0.1, "compute_ratio": 0.2, "rollbacks": []})  # fmt: skip
    for s, acc in enumerate((85.0, 89.0)):
        runs.append({"pair": "digits-mlp-sgd", "arm": "auto_top", "seed": s, "score": acc,
                     "lr": 0.1, "compute_ratio": 0.05,
                     "rollbacks": [{"lr_max": 1.0, "step": 9}] if s else []})  # fmt: skip
    src = tmp_path / "suite.json"
    src.write_text(json.dumps({"runs": runs}))
    out, md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    r = subprocess.run(
        [sys.executable, str(SUITE.parent / "compare.py"), str(src), "auto", "auto_top",
         "--json", str(out), "--table", str(md)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text())["pairs"]["digits-mlp-sgd"]
    assert row["seeds"] == [0, 1]
    assert row["auto"]["gap"] == pytest.approx(0.1) and row["auto"]["within"]
    assert row["auto_top"]["gap"] == pytest.approx(4.0) and not row["auto_top"]["within"]
    assert row["auto_top"]["rollbacks"] == 1
    assert "| auto | 0/0 | 1/1 | 0/0 | 1/1 |" in md.read_text()


def test_a_clipped_pair_clips_the_gradient_in_every_arm(monkeypatch):
    """Pairs with ``clip`` build every arm's Learner with ``GradientClip`` (the sweep and
    the probes apply it too: it affects the update)."""
    need("mnist1d")
    monkeypatch.syspath_prepend(str(SUITE.parent))
    import arms
    from tasks import TASKS

    from onecycle.callbacks import GradientClip

    task = TASKS["mnist1d-gru-adamw-clip"]
    assert task.clip == 1.0 and task.group == "held out"
    learn = arms._learner(task, task.build(0, "cpu", True), "cpu")
    (clip,) = [cb for cb in learn.cbs if isinstance(cb, GradientClip)]
    assert clip.max_norm == 1.0 and clip.affects_update
    plain = arms._learner(TASKS["mnist1d-gru-adamw"], task.build(0, "cpu", True), "cpu")
    assert not any(isinstance(cb, GradientClip) for cb in plain.cbs)
