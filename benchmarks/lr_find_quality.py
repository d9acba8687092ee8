"""How good is the range test's recommended lr_max? Against a grid of LRs.

For each (data set, model, optimizer) pair: 1cycle test accuracy at the range test's
recommended ``lr_max`` versus 1cycle at every LR of a grid spaced by x sqrt(10) over 4
decades, same epoch budget and seed. Target: within 0.5 accuracy points of the grid's best,
at no more than 1/5 of the grid's compute (counted in optimizer steps). The other rules'
suggestions (valley, steep, minimum) are trained too, for comparison.

    .venv/bin/python benchmarks/lr_find_quality.py --pairs mnist1d-adamw mnist1d-sgd
    .venv/bin/python benchmarks/lr_find_quality.py --pairs fashion-sgd fashion-adamw \\
        --train-samples 10000 --epochs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics

import numpy as np
import torch

from onecycle.run import FitConfig, build_learner, run_fit, run_lr_find

PAIRS = {
    "mnist1d-adamw": ("mnist1d", "cnn1d", "adamw", 1e-4),
    "mnist1d-sgd": ("mnist1d", "cnn1d", "sgd", 1e-3),
    "fashion-sgd": ("fashion-mnist", "cnn", "sgd", 1e-3),
    "fashion-adamw": ("fashion-mnist", "cnn", "adamw", 1e-4),
}


def ema_valley(lrs: list[float], smoothed: list[float]) -> float:
    """fastai's valley rule on the online (lagging) EMA, over [n//10 : -5] as fastai does."""
    from onecycle.suggest import _longest_decreasing

    n = len(smoothed)
    lo = n // 10
    s = np.asarray(smoothed[lo : n - 5])
    start, end = _longest_decreasing(s)
    return lrs[lo + start + int((end - start) / 3) + int((end - start) / 6)]


def torch_lr_finder_steepest(base: FitConfig) -> float | None:
    """torch-lr-finder 0.2.x's suggestion on the same model and data: the steepest
    index-spaced gradient of its lightly smoothed loss, skipping 10 points / the last 5."""
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    from torch.utils.data import DataLoader, TensorDataset

    learn, _ = build_learner(base.resolved())
    train = learn.train_data
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=train.batch_size,
                        shuffle=True)  # fmt: skip
    learn._make_opt([1e-7] * len(learn.param_groups))
    finder = LRFinder(learn.model, learn.opt, learn.loss_func)
    finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100)
    lrs, losses = finder.history["lr"][10:-5], finder.history["loss"][10:-5]
    finder.reset()
    return float(lrs[int(np.gradient(np.asarray(losses)).argmin())])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--pairs", nargs="+", default=["mnist1d-adamw", "mnist1d-sgd"], choices=list(PAIRS)
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds averaged per LR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {}
    for pair in args.pairs:
        dataset, model, opt, grid_lo = PAIRS[pair]
        base = FitConfig(dataset=dataset, model=model, opt=opt, epochs=args.epochs,
                         train_samples=args.train_samples, seed=0, out=None,
                         progress=False)  # fmt: skip

        def acc(lr: float, base: FitConfig = base) -> tuple[float, int]:
            """Mean test accuracy over seeds, and the optimizer steps this cost."""
            accs, steps = [], 0
            for seed in range(args.seeds):
                cfg = dataclasses.replace(base, lr_max=lr, seed=seed)
                m = run_fit(cfg).metrics["final"]
                accs.append(m["test_accuracy"])
                steps += m["optimizer_steps"]
            return statistics.mean(accs), steps

        res, _ = run_lr_find(base)
        grid = [grid_lo * math.sqrt(10) ** k for k in range(9)]
        grid_acc = {}
        grid_steps = 0
        for lr in grid:
            a, steps = acc(lr)
            grid_acc[lr] = a
            grid_steps += steps
            print(f"{pair}: grid lr {lr:.3g} -> {a:.4f}", flush=True)
        best_lr = max(grid_acc, key=grid_acc.get)
        rules = {k: v.lr for k, v in res.suggestions.items() if v.lr is not None}
        if res.recommended is not None:
            rules["recommended"] = res.recommended.lr
        peer = torch_lr_finder_steepest(base)
        if peer is not None:
            rules["torch-lr-finder steepest"] = peer
        rules["fastai-style valley (lagging EMA)"] = ema_valley(res.lrs, res.smoothed)
        rule_acc = {}
        for name, lr in rules.items():
            rule_acc[name] = {"lr": lr, "accuracy": acc(lr)[0]}
            print(f"{pair}: {name} lr {lr:.3g} -> {rule_acc[name]['accuracy']:.4f}", flush=True)
        rec = rule_acc.get("recommended")
        report[pair] = {
            "grid": {f"{k:.3g}": v for k, v in grid_acc.items()},
            "grid_best": {"lr": best_lr, "accuracy": grid_acc[best_lr]},
            "rules": rule_acc,
            "range_test_steps": len(res.lrs),
            "grid_steps": grid_steps,
            "compute_fraction": len(res.lrs) / grid_steps,
            "gap_points": None if rec is None else 100 * (grid_acc[best_lr] - rec["accuracy"]),
            "why_none": None if rec else {k: v.reason for k, v in res.suggestions.items()},
        }  # fmt: skip
        print(
            json.dumps(
                {
                    pair: {
                        k: report[pair][k] for k in ("grid_best", "gap_points", "compute_fraction")
                    }
                }
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "epochs": args.epochs,
                    "train_samples": args.train_samples,
                    "seeds": args.seeds,
                    "torch": torch.__version__,
                    "pairs": report,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
