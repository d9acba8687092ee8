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


def _suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SUITE), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip


def test_merge_replaces_a_rerun_and_report_counts_it(tmp_path):
    """``suite.py merge``: a later file's run replaces the same pair/arm/seed/parameter and
    adds other seeds; ``suite.py report`` counts the pairs within target (trains nothing)."""
    grid = {0.1: (90.0, 92.0), 0.01: (80.0, 80.0)}
    runs = [{"pair": "digits-mlp-sgd", "arm": "grid", "param": lr, "seed": s, "score": acc}
            for lr, accs in grid.items() for s, acc in enumerate(accs)]  # fmt: skip
    runs += [{"pair": "digits-mlp-sgd", "arm": "auto", "param": None, "seed": s, "score": 60.0,
              "lr": 1.0, "compute_ratio": 0.2} for s in (0, 1)]  # fmt: skip
    rerun = [{"pair": "digits-mlp-sgd", "arm": "auto", "param": None, "seed": s, "score": acc,
              "lr": 0.1, "compute_ratio": 0.25} for s, acc in ((0, 91.0), (1, 90.8))]  # fmt: skip
    for name, rs in (("grid", runs), ("rerun", rerun)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"args": {}, "seconds": 1.0, "torch": "x", "runs": rs}))  # fmt: skip
    merged, md = tmp_path / "merged.json", tmp_path / "merged.md"
    r = _suite("merge", str(tmp_path / "grid.json"), str(tmp_path / "rerun.json"),
               "--json", str(merged), "--table", str(md))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    auto = json.loads(merged.read_text())["summary"]["digits-mlp-sgd"]["arms"]["auto"]
    assert auto["n"] == 2 and auto["lrs"] == [0.1, 0.1]
    assert auto["gap"] == pytest.approx(0.1) and auto["compute_ratio"] == pytest.approx(0.25)
    assert "| digits-mlp-sgd | 91 @ 0.1 | 90.9 (+0.10) |" in md.read_text()
    out = tmp_path / "report.json"
    r = _suite("report", str(merged), "--json", str(out), "--table", str(tmp_path / "r.md"))
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["groups"]["seen"]["within"]["auto"] == 1 and rep["groups"]["all"]["pairs"] == 1


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
