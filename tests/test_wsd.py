"""Warmup-stable-decay: the pure schedule against transformers' ``get_wsd_schedule`` (the
oracle), its bad values, and the CLI (`onecycle schedule/fit --schedule wsd`)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from conftest import need

from onecycle import ConfigError
from onecycle import schedules as S
from onecycle.cli import main


@pytest.mark.parametrize("cooldown,hf", [("linear", "linear"), ("cos", "cosine"),
                                          ("1-sqrt", "1-sqrt")])  # fmt: skip
def test_wsd_matches_transformers_within_one_steps_change(cooldown, hf):
    transformers = need("transformers")
    total, warm, decay = 200, 10, 40
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = transformers.get_wsd_schedule(opt, num_warmup_steps=warm, num_decay_steps=decay,
                                          num_training_steps=total, decay_type=hf)  # fmt: skip
    theirs = []
    for _ in range(total):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = S.sample(S.wsd(1.0, warm / total, decay / total, cooldown), total)
    # HF counts steps (warm-up starts at 0, the last step is one short of the end); we count
    # progress from the first step to the last: the two agree within one step's change
    step_change = max(abs(a - b) for a, b in itertools.pairwise(theirs))
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= step_change + 1e-12
    assert ours[total // 2] == theirs[total // 2] == 1.0  # the stable phase
    assert ours[-1] == pytest.approx(0.0, abs=1e-12)


def test_one_minus_sqrt_cooldown_shape():
    s = S.wsd(2.0, warmup=0.0, cooldown_pct=0.5, cooldown="1-sqrt")
    assert s(0.0) == 2.0 and s(0.5) == 2.0
    assert s(0.5 + 0.5 * 0.25) == pytest.approx(2.0 * (1 - math.sqrt(0.25)))
    assert s(1.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kwargs,name", [
    ({"lr_max": 0.0}, "lr_max"), ({"warmup": 1.0}, "warmup"),
    ({"cooldown_pct": 0.0}, "cooldown_pct"), ({"warmup": 0.5, "cooldown_pct": 0.6}, "cooldown_pct"),
    ({"cooldown": "sqrt"}, "cooldown"),
])  # fmt: skip
def test_wsd_refuses_bad_values(kwargs, name):
    args = {"lr_max": 1.0, **kwargs}
    with pytest.raises(ConfigError, match=name):
        S.wsd(**args)


def test_cli_previews_and_trains_wsd(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["schedule", "--schedule", "wsd", "--lr-max", "0.5", "--steps", "100",
                 "--warmup", "0.1", "--cooldown", "linear", "--cooldown-pct", "0.3",
                 "--out", str(out)]) == 0  # fmt: skip
    lrs = json.loads((out / "schedule.json").read_text())["values"]["lr"]
    assert lrs == pytest.approx(S.sample(S.wsd(0.5, 0.1, 0.3, "linear"), 100))
    run = tmp_path / "f"
    assert main(["fit", "--dataset", "mnist1d", "--schedule", "wsd", "--epochs", "2",
                 "--train-samples", "1000", "--no-progress", "--out", str(run)]) == 0  # fmt: skip
    assert main(["schedule", "--schedule", "wsd", "--cooldown-pct", "0.99", "--out",
                 str(out)]) == 2  # fmt: skip
    assert "cooldown_pct" in capsys.readouterr().err
