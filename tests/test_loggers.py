"""CSV and TensorBoard loggers: every optimizer step's hyper-parameters and loss as the
step used them, epoch metrics, nothing from the range test's side runs; `fit --log`."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import need

from onecycle import Learner, accuracy
from onecycle.cli import main
from onecycle.data import Loader
from onecycle.loggers import CSVLogger, TensorBoardLogger
from onecycle.schedules import one_cycle, one_cycle_moms, sample


def _learner(*cbs) -> Learner:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return Learner(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 2)),
                   Loader(x, y, 64, seed=0), Loader(x, y, 512, shuffle=False),
                   loss_func=F.cross_entropy, metrics=[accuracy], cbs=cbs)  # fmt: skip


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_records_each_step_as_it_was_taken(tmp_path):
    learn = _learner(CSVLogger(tmp_path))
    learn.fit_one_cycle(3, 0.1, wd=1e-3)
    steps = _rows(tmp_path / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(48))
    assert [float(r["lr"]) for r in steps] == pytest.approx(sample(one_cycle(0.1), 48))
    assert [float(r["momentum"]) for r in steps] == pytest.approx(sample(one_cycle_moms(), 48))
    assert {float(r["wd"]) for r in steps} == {1e-3}
    assert [float(r["loss"]) for r in steps] == pytest.approx(learn.recorder.losses, rel=1e-6)
    epochs = _rows(tmp_path / "epochs.csv")
    assert len(epochs) == 3 and all("accuracy" in r and "valid_loss" in r for r in epochs)
    assert float(epochs[-1]["accuracy"]) == pytest.approx(learn.recorder.rows[-1]["accuracy"])


def test_csv_logger_never_sees_the_auto_side_runs(tmp_path):
    learn = _learner(CSVLogger(tmp_path))
    learn.fit_one_cycle(2, "auto")
    steps = _rows(tmp_path / "steps.csv")
    assert len(steps) == 32 and max(float(r["lr"]) for r in steps) == pytest.approx(
        learn.auto_result.lr_max, rel=1e-3
    )  # fmt: skip


def test_csv_logger_appends_for_a_resumed_run_and_overwrites_otherwise(tmp_path):
    _learner(CSVLogger(tmp_path)).fit_one_cycle(1, 0.1)
    _learner(CSVLogger(tmp_path, append=True)).fit_one_cycle(1, 0.1)
    text = (tmp_path / "steps.csv").read_text()
    assert text.count("step,epoch") == 1 and len(_rows(tmp_path / "steps.csv")) == 32
    _learner(CSVLogger(tmp_path)).fit_one_cycle(1, 0.1)
    assert len(_rows(tmp_path / "steps.csv")) == 16


def test_tensorboard_logger_writes_the_same_scalars(tmp_path):
    need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    learn = _learner(TensorBoardLogger(tmp_path))
    learn.fit_one_cycle(2, 0.1)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    lrs = [e.value for e in acc.Scalars("hp/lr")]
    assert lrs == pytest.approx(sample(one_cycle(0.1), 32), rel=1e-6)
    assert len(acc.Scalars("train/loss")) == 32 and len(acc.Scalars("valid/accuracy")) == 2


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_cli_fit_log(kind, tmp_path):
    if kind == "tensorboard":
        need("tensorboard")
    out = tmp_path / "run"
    assert main(["fit", "--dataset", "mnist1d", "--epochs", "2", "--train-samples", "1000",
                 "--no-progress", "--log", kind, "--out", str(out)]) == 0  # fmt: skip
    logs = sorted(p.name for p in (out / "logs").iterdir())
    if kind == "csv":
        assert logs == ["epochs.csv", "steps.csv"]
        steps = json.loads((out / "metrics.json").read_text())["final"]["optimizer_steps"]
        assert len(_rows(out / "logs" / "steps.csv")) == steps
    else:
        assert logs and logs[0].startswith("events.out.tfevents")
