"""Fashion-MNIST at a short budget: 1cycle variants of the fast recipe against schedule-free
AdamW at 10x its default LR, on the same seeds and epochs (accuracy only: seconds are not
compared here, ``time_to_accuracy.py`` does that).

At 1E and 2E the time-to-accuracy benchmark has schedule-free AdamW ahead of the fast
recipe by 0.4-0.8 points. This script asks which single change to the 1cycle closes that
gap at equal epochs: each variant is ``onecycle fit --dataset fashion-mnist`` with one
``FitConfig`` field changed (the optimizer, the peak, weight decay, batch size, warm-up),
and ``tail-avg`` averages the weights over the last 5 / 10 / 25% of the steps (batch-norm
statistics recomputed on 50 training batches). Schedule-free runs ``--sf-epochs`` epochs
once per seed and is read after each of them (its averaged weights, batch-norm statistics
recomputed), as in ``time_to_accuracy.py``. Results: ``docs/benchmarks.md``, "What closes
the gap at 2E"; the JSON holds every run. Needs ``schedulefree`` (``make bench-deps``).

    .venv/bin/python benchmarks/short_budget.py --seeds 10 11 --epochs 2 \\
        --json docs/results/short_budget.json
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import time_to_accuracy as T  # benchmarks/ (a script's own folder is on sys.path)
import torch

import onecycle
from onecycle.callbacks import Callback
from onecycle.data import load_dataset

VARIANTS: dict[str, dict[str, Any]] = {
    "fast recipe (SGD 0.2)": {},
    "AdamW 0.01, wd 0.05": {"opt": "adamw", "lr_max": 0.01, "wd": 0.05},
    "AdamW 0.01, wd 0.0125": {"opt": "adamw", "lr_max": 0.01, "wd": 0.0125},
    "AdamW 0.025, wd 0.02": {"opt": "adamw", "lr_max": 0.025, "wd": 0.02},
    "wd 1e-3": {"wd": 1e-3},
    "wd 0": {"wd": 0.0},
    "batch 128": {"bs": 128},
    "peak 0.1": {"lr_max": 0.1},
    "peak 0.4": {"lr_max": 0.4},
    "pct_start 0.1": {"pct_start": 0.1},
    "tail-avg": {},
}
TAILS = (0.05, 0.1, 0.25)


class TailAverage(Callback):
    """The running mean of the weights over the last ``f`` of the steps, for each f."""

    def __init__(self, fracs: tuple[float, ...]) -> None:
        self.fracs, self.step = fracs, 0
        self.mean: dict[float, list[torch.Tensor]] = {}
        self.n = dict.fromkeys(fracs, 0)

    def after_step(self, learn: Any) -> None:
        self.step += 1
        total = learn.n_epoch * learn.n_iter
        ps = [p.detach().float() for p in learn.model.parameters()]
        for f in self.fracs:
            if self.step > total * (1 - f):
                self.n[f] += 1
                if f not in self.mean:
                    self.mean[f] = [p.clone() for p in ps]
                for m, p in zip(self.mean[f], ps, strict=True):
                    m.add_(p - m, alpha=1 / self.n[f])


def one_cycle(name: str, epochs: int, seed: int) -> dict[str, Any]:
    learn = onecycle.recipe("fashion-mnist").learner(seed=seed, **VARIANTS[name])
    cfg = learn.run_config  # the recipe with the variant's change, resolved
    cbs = [TailAverage(TAILS)] if name == "tail-avg" else []
    learn.fit_one_cycle(epochs, cfg["lr_max"], pct_start=cfg["pct_start"], cbs=cbs)
    row: dict[str, Any] = {"accuracy": learn.validate()["accuracy"]}
    if cbs:
        final = copy.deepcopy(learn.model.state_dict())
        for f, mean in cbs[0].mean.items():
            with torch.no_grad():
                for p, m in zip(learn.model.parameters(), mean, strict=True):
                    p.copy_(m)
            T.recompute_bn(learn.model, learn.train_data, learn.autocast)
            row[f"accuracy_tail{f}"] = learn.validate()["accuracy"]
            learn.model.load_state_dict(final)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sf-epochs", type=int, default=4, help="schedule-free's run, read per epoch")
    p.add_argument("--sf-lr", type=float, default=0.025)
    p.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows: list[dict[str, Any]] = []
    data = load_dataset("fashion-mnist")
    for seed in a.seeds:
        sf = T.other_optimizer("fast", data, a.sf_epochs, seed, "schedule-free", lr=a.sf_lr)
        for ep, acc in enumerate(sf["acc_per_epoch"], 1):
            rows.append({"arm": f"schedule-free AdamW {a.sf_lr}", "epochs": ep, "seed": seed,
                         "accuracy": acc})  # fmt: skip
        for name in a.only:
            rows.append({"arm": name, "epochs": a.epochs, "seed": seed,
                         **one_cycle(name, a.epochs, seed)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    at = {r["arm"]: [] for r in rows}
    for r in rows:
        if r["epochs"] == a.epochs:
            at[r["arm"]].append(100 * r["accuracy"])
    print(f"\naccuracy at {a.epochs} epochs, seeds {a.seeds}")
    for arm, accs in at.items():
        print(f"  {arm:28s} " + " ".join(f"{x:.2f}" for x in accs))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "torch": torch.__version__, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
