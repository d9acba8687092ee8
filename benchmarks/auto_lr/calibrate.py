"""Calibration data for the auto reading, on the calibration pairs only (tasks.py).

For each pair and seed: the sweep curve (Learner update rule, momentum at 1cycle's peak)
at a few lengths, and, for every LR of the grid, the held-back loss of a probe at a few
lengths next to the full 1cycle run's final metric. The constants of ``onecycle.auto``
(DIV_TOP, SPACING, the sweep length, the probe length) were read from this output.

    .venv/bin/python benchmarks/auto_lr/calibrate.py --pairs mnist1d-cnn-sgd --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import arms
    import torch
    from tasks import TASKS

    from onecycle.auto import lr_sweep, probe

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", nargs="+", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fracs", nargs="+", type=float, default=[0.02, 0.04, 0.08])
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for pair in args.pairs:
        task = TASKS[pair]
        if not task.calibration:
            raise SystemExit(f"{pair} is {task.group}: calibrate on calibration pairs only")
        for seed in args.seeds:
            b = task.build(seed, args.device, False)
            learn = arms._learner(task, b, args.device)
            total = learn.steps_per_epoch() * task.epochs
            sweeps = {}
            for start, n in ((1e-7, 100), (1e-6, 60), (1e-6, 100)):
                r = lr_sweep(learn, start_lr=start, num_it=n)
                rec = r.recommended.lr if r.recommended else None
                sweeps[f"{start:g}/{n}"] = {"lrs": r.lrs, "losses": r.losses,
                                           "stop": r.stop_reason, "rec": rec}  # fmt: skip
            probes = {}
            for lr in task.grid():
                probes[f"{lr:.4g}"] = {
                    f"{f:g}": probe(learn, lr, max(4, int(f * total))).loss for f in args.fracs
                }
                full = arms.run_grid(task, lambda s=seed, t=task: t.build(s, args.device, False),
                                     args.device, lr)  # fmt: skip
                probes[f"{lr:.4g}"]["full"] = full["score"]
                print(pair, seed, f"{lr:.4g}", probes[f"{lr:.4g}"], flush=True)
            out[f"{pair}/{seed}"] = {"total_steps": total, "sweeps": sweeps, "probes": probes}
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
