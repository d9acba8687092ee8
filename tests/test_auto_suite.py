"""The lr_max="auto" suite's --quick mode, end to end (benchmarks/auto_lr/suite.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
