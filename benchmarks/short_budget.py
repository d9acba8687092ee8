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

``--recipe best`` runs the best recipe's variants instead (``BEST_VARIANTS``), each for
its own number of epochs, chosen so that every variant takes about 10E on the 2-core
machine (the narrow model's epoch is ~0.57E, the wide one's ~0.95E), with the test
accuracy also read with the recipe's test-time augmentation (and at the tail averages);
no schedule-free runs
(``time_to_accuracy.py`` compares the chosen recipe with them at 10E):

    .venv/bin/python benchmarks/short_budget.py --recipe best --seeds 10 11 --threads 1 \\
        --json docs/results/best_recipe_explore.json
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
from onecycle.data import Loader, load_dataset
from onecycle.data.loader import random_crop

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
ALTERNATE = "alternate flips"  # not a FitConfig field: the loader's flips alternate
# --recipe best: (changes to the best recipe, epochs); about 10E each on the 2-core machine
BEST_VARIANTS: dict[str, tuple[dict[str, Any], int]] = {
    "airnet, 18 epochs": ({}, 18),
    "airnet, 18 epochs, wd 2.5e-3": ({"wd": 2.5e-3}, 18),
    "airnet-wide, 11 epochs (the best recipe before)": ({"model": "airnet-wide"}, 11),
    "airnet-wide, 11 epochs, alternate flips, label smoothing 0.2": (
        {"model": "airnet-wide", "label_smoothing": 0.2, ALTERNATE: True}, 11),
}  # fmt: skip
TAILS = (0.05, 0.1, 0.25)


class AlternateFlips(Loader):
    """airbench's alternating flip: each image is flipped in every other epoch (its first
    epoch's flip drawn at random), the random crops as ``Loader``'s."""

    def _augment(self, xb: torch.Tensor, gen: torch.Generator, idx: torch.Tensor,
                 epoch: int) -> torch.Tensor:  # fmt: skip
        if not hasattr(self, "phase"):
            g = torch.Generator().manual_seed(self.seed * 31 + 7)
            self.phase = torch.randint(0, 2, (len(self.x),), generator=g).to(self.device)
        xb = random_crop(xb, self.crop_pad, gen)
        mask = ((self.phase[idx] + epoch) % 2).bool().view(-1, 1, 1, 1)
        return torch.where(mask, xb.flip(-1), xb)


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


def one_cycle(name: str, epochs: int, seed: int, recipe: str = "fast") -> dict[str, Any]:
    changes = dict(VARIANTS[name] if recipe == "fast" else BEST_VARIANTS[name][0])
    alternate = changes.pop(ALTERNATE, False)
    learn = onecycle.recipe("fashion-mnist", recipe).learner(seed=seed, **changes)
    if alternate:
        learn.train_data.__class__ = AlternateFlips
    cfg = learn.run_config  # the recipe with the variant's change, resolved
    cbs = [TailAverage(TAILS)] if name == "tail-avg" or recipe == "best" else []
    learn.fit_one_cycle(epochs, cfg["lr_max"], pct_start=cfg["pct_start"], cbs=cbs)
    row: dict[str, Any] = {"accuracy": learn.validate()["accuracy"]}
    if cfg["tta"]:
        row["accuracy_tta"] = learn.validate(tta=cfg["tta"])["accuracy"]
        row["seconds"] = sum(learn.recorder.train_seconds)
    if cbs:
        final = copy.deepcopy(learn.model.state_dict())
        for f, mean in cbs[0].mean.items():
            with torch.no_grad():
                for p, m in zip(learn.model.parameters(), mean, strict=True):
                    p.copy_(m)
            T.recompute_bn(learn.model, learn.train_data, learn.autocast)
            row[f"accuracy_tail{f}"] = learn.validate()["accuracy"]
            if cfg["tta"]:
                row[f"accuracy_tail{f}_tta"] = learn.validate(tta=cfg["tta"])["accuracy"]
            learn.model.load_state_dict(final)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sf-epochs", type=int, default=4, help="schedule-free's run, read per epoch")
    p.add_argument("--sf-lr", type=float, default=0.025)
    p.add_argument("--only", nargs="*", default=None, choices=[*VARIANTS, *BEST_VARIANTS])
    p.add_argument("--recipe", choices=["fast", "best"], default="fast")
    p.add_argument("--threads", type=int, default=None, help="torch's threads (default: its)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.recipe == "best":
        best(a)
        return
    a.only = a.only or list(VARIANTS)
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


def best(a: argparse.Namespace) -> None:
    """--recipe best: each of BEST_VARIANTS for its own epochs, with and without TTA."""
    rows = []
    for seed in a.seeds:
        for name in a.only or list(BEST_VARIANTS):
            epochs = BEST_VARIANTS[name][1]
            rows.append({"arm": name, "epochs": epochs, "seed": seed,
                         **one_cycle(name, epochs, seed, "best")})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nthe best recipe's variants, seeds {a.seeds}: accuracy (with TTA)")
    for name in dict.fromkeys(r["arm"] for r in rows):
        accs = [f"{100 * r['accuracy']:.2f} ({100 * r['accuracy_tta']:.2f})" for r in rows
                if r["arm"] == name]  # fmt: skip
        print(f"  {name:62s} " + "  ".join(accs))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "torch": torch.__version__, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
