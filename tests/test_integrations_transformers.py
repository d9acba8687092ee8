"""onecycle inside the real Hugging Face Trainer: the schedule's length comes from the
Trainer (accumulation, 2 processes), resume continues it, momentum is logged, and our
range test runs on its dict batches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import need

transformers = need("transformers")  # the `integrations` extra: `make test` installs it
need("accelerate")

from hf_workers import Data, Tiny, Trace, args  # noqa: E402

import onecycle  # noqa: E402
from onecycle.integrations.transformers import MomentumLogger, OneCycleTrainer  # noqa: E402
from onecycle.schedules import one_cycle, one_cycle_moms, sample  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def test_one_cycle_trainer_follows_the_schedule_over_the_trainers_own_step_count(tmp_path):
    trace = Trace()
    t = OneCycleTrainer(model=Tiny(), args=args(str(tmp_path), gradient_accumulation_steps=2),
                        train_dataset=Data(), callbacks=[trace])  # fmt: skip
    t.train()
    total = t.state.max_steps
    assert total == 3 * 16 // 2 and len(trace.steps) == total
    assert [s[0] for s in trace.steps] == pytest.approx(sample(one_cycle(0.1), total), rel=1e-12)
    assert [s[1] for s in trace.steps] == pytest.approx(sample(one_cycle_moms(), total))
    logged = [h for h in t.state.log_history if "learning_rate" in h]
    assert logged and all("momentum" in h for h in logged)


def test_resume_from_a_trainer_checkpoint_continues_the_cycle(tmp_path):
    full = Trace()
    OneCycleTrainer(model=Tiny(), args=args(str(tmp_path / "a")), train_dataset=Data(),
                    callbacks=[full]).train()  # fmt: skip
    head = Trace()
    OneCycleTrainer(model=Tiny(), args=args(str(tmp_path / "b"), save_strategy="steps",
                                            save_steps=20), train_dataset=Data(),
                    callbacks=[head]).train()  # fmt: skip
    ckpt = tmp_path / "b" / "checkpoint-20"
    assert ckpt.is_dir()
    tail = Trace()
    OneCycleTrainer(model=Tiny(), args=args(str(tmp_path / "c")), train_dataset=Data(),
                    callbacks=[tail]).train(resume_from_checkpoint=str(ckpt))  # fmt: skip
    assert [s[0] for s in tail.steps] == pytest.approx([s[0] for s in full.steps[20:]],
                                                         rel=1e-12)  # fmt: skip
    assert [s[1] for s in tail.steps] == pytest.approx([s[1] for s in full.steps[20:]])


def test_momentum_logger_on_a_plain_trainer(tmp_path):
    t = transformers.Trainer(model=Tiny(), args=args(str(tmp_path)), train_dataset=Data())
    MomentumLogger.install(t)
    t.train()
    logged = [h for h in t.state.log_history if "learning_rate" in h]
    assert logged and all(h["momentum"] == pytest.approx(0.9) for h in logged)  # AdamW's beta1


def test_our_range_test_on_the_trainers_dict_batches(tmp_path):
    t = transformers.Trainer(model=Tiny(), args=args(str(tmp_path)), train_dataset=Data())
    t.create_optimizer()
    before = [p.detach().clone() for p in t.model.parameters()]
    res = onecycle.range_test(t.model, t.optimizer, None, t.get_train_dataloader(), num_it=60)
    assert len(res.lrs) > 20 and res.recommended is not None
    assert all((a == b).all() for a, b in zip(before, t.model.parameters()))  # restored


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    script = Path(__file__).with_name("hf_workers.py")
    env = {**os.environ, "PYTHONPATH": str(script.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script),
                           str(out), *extra], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_hand_counted_schedule_under_torchrun_warns_that_it_did_not_finish(tmp_path):
    # issue 14: total_steps = epochs x len(loader) is 48 here, HF runs 24 per process:
    # the LR stopped at the top of the cycle, and nothing said so
    proc = _torchrun(tmp_path, "plain")
    assert proc.stderr.count("ScheduleLR stopped at step 24 of total_steps=48") == 2  # per rank


@pytest.mark.slow
def test_two_processes_under_torchrun_schedule_each_ranks_own_steps(tmp_path):
    _torchrun(tmp_path)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # 256 samples, 16 per process and step, 2 processes: 8 steps per epoch, 24 in all
        # (a hand count of epochs x len(loader) would say 48 and stop at half the cycle)
        assert got["max_steps"] == 24 and len(got["steps"]) == 24
        lrs = [s[0] for s in got["steps"]]
        assert lrs == pytest.approx(sample(one_cycle(0.1), 24), rel=1e-12)
