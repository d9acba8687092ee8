"""The super-convergence study: its arithmetic on synthetic curves, and `onecycle study`
end to end on MNIST-1D (generated, no download)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from onecycle.cli import main
from onecycle.errors import ConfigError
from onecycle.study import (
    StudyConfig,
    _eval_points,
    _train,
    iters_to_reach,
    markdown,
    place_lrs,
    speedup,
    speedup_report,
    summarize,
)
from onecycle.suggest import Suggestion

GRID = [0, 100, 200, 300, 400, 500]


def _summ(accs: list[float]) -> dict:
    return summarize([{"iters": GRID, "seconds": [i / 10 for i in GRID], "acc": accs}], [0.9])


def test_iters_to_reach_first_hit_never_and_nan() -> None:
    assert iters_to_reach(GRID, [0.1, 0.5, 0.91, 0.85, 0.95, 0.96], 0.9) == 200
    assert iters_to_reach(GRID, [0.1, 0.5, 0.6, 0.7, 0.8, 0.89], 0.9) is None
    assert iters_to_reach(GRID, [math.nan] * 5 + [0.95], 0.9) == 500
    assert iters_to_reach(GRID, [0.1, 0.2, 0.3, 0.4, 0.5, 0.9], 0.9) == 500  # exactly equal


def test_speedup_ratio_and_missing() -> None:
    assert speedup(70_000, 25_000) == pytest.approx(2.8)  # Smith's CLR claim on CIFAR-10
    assert speedup(80_000, 10_000) == 8.0  # and 1cycle's on ResNet-56
    assert speedup(None, 100) is None and speedup(100, None) is None


def test_speedup_report_when_1cycle_is_faster() -> None:
    s = {
        "fixed a": _summ([0.1, 0.5, 0.7, 0.8, 0.85, 0.88]),
        "fixed b": _summ([0.1, 0.3, 0.5, 0.6, 0.7, 0.8]),
        "1cycle": _summ([0.1, 0.6, 0.88, 0.93, 0.95, 0.96]),
    }
    rep = speedup_report(s, ["fixed a", "fixed b"], ["1cycle"])
    assert rep["best_fixed"] == "fixed a" and rep["target"] == pytest.approx(0.88)
    assert rep["best_fixed_iters"] == 500
    one = rep["contenders"]["1cycle"]
    assert one["iters"] == 200 and one["speedup"] == pytest.approx(2.5)
    assert "2.50x fewer" in one["verdict"] and "NOT" not in one["verdict"]


def test_speedup_report_says_so_when_1cycle_is_not_faster() -> None:
    fixed = _summ([0.1, 0.8, 0.9, 0.92, 0.93, 0.93])  # reaches its final 0.93 at 400
    never = _summ([0.1, 0.4, 0.6, 0.8, 0.85, 0.9])
    later = _summ([0.1, 0.2, 0.3, 0.4, 0.5, 0.95])  # reaches 0.93 only at 500
    rep = speedup_report({"fixed": fixed, "1cycle": never, "CLR": later}, ["fixed"],
                         ["1cycle", "CLR"])  # fmt: skip
    assert rep["contenders"]["1cycle"]["speedup"] is None
    assert "1cycle is NOT faster" in rep["contenders"]["1cycle"]["verdict"]
    assert rep["contenders"]["CLR"]["speedup"] == pytest.approx(400 / 500)
    assert "CLR is NOT faster" in rep["contenders"]["CLR"]["verdict"]
    assert any("NOT faster" in line for line in rep["text"])


def test_summarize_mean_spread_and_time_to_target() -> None:
    runs = [
        {"iters": GRID, "seconds": [0, 1, 2, 3, 4, 5], "acc": [0.1, 0.8, 0.9, 0.9, 0.9, 0.92]},
        {"iters": GRID, "seconds": [0, 3, 4, 5, 6, 7], "acc": [0.1, 0.8, 0.8, 0.9, 0.9, 0.88]},
    ]
    s = summarize(runs, [0.85, 0.99])
    assert s["mean_acc"][2] == pytest.approx(0.85)
    assert s["final"]["mean"] == pytest.approx(0.90) and s["final"]["sd"] == pytest.approx(
        math.sqrt(2) * 0.02)  # fmt: skip
    assert (s["final"]["min"], s["final"]["max"]) == (0.88, 0.92)
    assert s["to_target"]["0.85"] == {"iters": 200, "seconds": 3.0}  # mean of 2 and 4
    assert s["to_target"]["0.99"] == {"iters": None, "seconds": None}
    with pytest.raises(ValueError, match="evaluation iterations"):
        summarize([runs[0], {**runs[1], "iters": [0, 1, 2, 3, 4, 5]}], [0.9])


def _fake_result(recommended: float | None, bounds=(1e-3, 1e-1)) -> SimpleNamespace:
    lrs = [10 ** (-5 + k / 10) for k in range(60)]  # 1e-5 .. ~8
    curve = [2.0 - k / 100 for k in range(45)] + [math.nan] * 15  # blew up at lrs[44]
    rec = None if recommended is None else Suggestion("recommended", recommended, "test")
    return SimpleNamespace(
        lrs=lrs, analysis_curve=curve, recommended=rec, stop_reason="diverged",
        suggestions={"clr_bounds": Suggestion("clr_bounds", bounds[1], "t", 30, bounds)},
    )  # fmt: skip


def test_place_lrs_mirrors_the_seeds_four_cases() -> None:
    lrs = place_lrs(_fake_result(0.05))
    f = lrs["fixed"]
    assert f["too small"] == pytest.approx(5e-4) and f["good"] == pytest.approx(5e-3)
    assert f["near-optimal"] == 0.05
    assert f["too large"] == pytest.approx(10 ** (-5 + 4.4))  # where the curve ends
    assert lrs["clr"] == (1e-3, 1e-1)
    with pytest.raises(ConfigError, match="range test"):
        place_lrs(_fake_result(None))


def test_eval_points_cover_the_budget() -> None:
    assert _eval_points(120, 4) == [30, 60, 90, 120]
    assert _eval_points(3, 8) == [1, 2, 3]


def test_study_config_rejects_bad_values() -> None:
    for kw, name in [({"dataset": "cifar"}, "dataset"), ({"epochs": 0}, "epochs"),
                     ({"seeds": 0}, "seeds"), ({"targets": (1.5,)}, "targets"),
                     ({"evals_per_epoch": -1}, "evals_per_epoch")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            StudyConfig(**kw).resolved()


def test_a_diverging_run_still_covers_the_grid() -> None:
    cfg = StudyConfig(dataset="mnist1d", train_samples=400, epochs=2).fit_config(
        schedule="const", lr_max=1e9, opt="sgd"
    )
    r = _train(cfg, evals_per_epoch=2)
    assert r["diverged_at"] is not None and r["diverged_at"] < r["total_steps"]
    assert r["iters"] == [0, *_eval_points(r["total_steps"], 4)]
    assert len(r["acc"]) == len(r["iters"]) == len(r["seconds"])
    assert r["acc"][-1] <= 0.2  # what the broken weights score


def test_cli_study_quick_writes_a_complete_report(tmp_path, capsys) -> None:
    out = tmp_path / "study"
    assert main(["study", "--quick", "--dataset", "mnist1d", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "study.json").read_text())
    names = list(data["schedules"])
    assert len(names) == 9 and names[-1] == "1cycle" and "CLR triangular2" in names
    assert sum(n.startswith("fixed ") for n in names) == 4
    fixed = [data["lrs"]["fixed"][k] for k in ("too small", "good", "near-optimal", "too large")]
    assert fixed == sorted(fixed) and data["lrs"]["near"] == fixed[2]
    for sch in data["schedules"].values():
        run = sch["runs"][0]
        assert run["iters"][0] == 0 and run["iters"][-1] == run["total_steps"] == 120
        assert len(run["acc"]) == 7  # before training + 2 per epoch x 3
        assert all(0 <= a <= 1 for a in run["acc"])
        assert sch["lr_trace"] and sch["lr_trace"][-1][0] == run["total_steps"] - 1
    # the LRs trained with are the ones placed: 1cycle peaks at lr_max, fixed runs hold theirs
    peak = max(v for _, v in data["schedules"]["1cycle"]["lr_trace"])
    assert peak == pytest.approx(data["lrs"]["near"], rel=1e-3)
    too_small = next(n for n in names if n.startswith("fixed too small"))
    assert {v for _, v in data["schedules"][too_small]["lr_trace"]} == {fixed[0]}
    table = (out / "study.md").read_text()
    assert table.count("\n| ") == 1 + 9  # header + one row per schedule
    assert "Speed-up over the best fixed LR" in table and data["speedup"]["text"][1] in table
    assert "1cycle" in data["speedup"]["contenders"] and table in printed
    for png in ("accuracy.png", "lrs.png", "range_test.png"):
        head = (out / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n", png


def test_cli_study_ablations(tmp_path) -> None:
    out = tmp_path / "abl"
    args = ["study", "--quick", "--epochs", "1", "--ablations", "--out", str(out)]
    assert main(args) == 0
    data = json.loads((out / "study.json").read_text())
    factors = [a["factor"] for a in data["ablations"]]
    assert factors[:2] == ["momentum", "momentum"]
    assert {"weight decay", "batch size", "shape"} <= set(factors)
    wds = [a["setting"] for a in data["ablations"] if a["factor"] == "weight decay"]
    assert {"0.001", "0.0001", "1e-05", "0"} <= set(wds)
    assert "## Ablations" in markdown(data)


@pytest.mark.parametrize(
    "argv", [["--epochs", "0"], ["--seeds", "-1"], ["--targets", "2"], ["--dataset", "cifar"],
             ["--threads", "0"]],
)  # fmt: skip
def test_cli_study_usage_errors_are_one_line(argv, tmp_path, capsys) -> None:
    assert main(["study", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert argv[0].lstrip("-").replace("-", "_") in err.replace("-", "_")


def test_place_lrs_around_a_given_lr_max() -> None:
    lrs = place_lrs(_fake_result(None), near=0.1)  # no recommendation needed
    assert lrs["near"] == 0.1 and lrs["fixed"]["good"] == pytest.approx(0.01)
    assert lrs["fixed"]["too large"] == pytest.approx(10 ** (-5 + 4.4))  # blow-up > 1.5 x 0.1
    assert lrs["clr"] == (1e-3, 0.1)
    assert place_lrs(_fake_result(None), near=5.0)["fixed"]["too large"] == 7.5
