"""Fashion-MNIST test accuracy against training time, in units of E, side by side in one run.

E is the time the hand-written yardstick loop (``benchmarks/overhead.py``'s: the yardstick
CNN, 60k samples, batch 256, SGD Nesterov with ``torch.optim.lr_scheduler.OneCycleLR``)
takes for one epoch, measured here, in this process: the median epoch of that arm's runs.
The arms, each a 1cycle (or schedule-free) run whose final accuracy is its result:

- ``hand-written OneCycleLR``: that loop (max_lr 0.2, its defaults, L2 wd 5e-4), fp32;
- ``previous recipe``: ``onecycle fit --dataset fashion-mnist --model cnn --no-amp
  --no-channels-last --label-smoothing 0``, what the command ran before this recipe;
- ``new recipe``: ``onecycle fit --dataset fashion-mnist`` with no other flags (and with
  ``--epochs N`` for shorter budgets), several seeds;
- ``schedule-free AdamW``: ``schedulefree.AdamWScheduleFree`` on the new recipe's model,
  data path, bf16 and label smoothing, at its default LR and 10x, 5% warm-up, evaluated at
  the averaged weights (``optimizer.eval()``) after recomputing batch-norm statistics on
  50 training batches, as its README says (needs the optional ``schedulefree``).

Time counts training only (per-epoch evaluation is not timed, for every arm). Accuracy
after each epoch is kept for the plot; what a budget reaches is its final accuracy.

    .venv/bin/python benchmarks/time_to_accuracy.py --json docs/results/time_to_accuracy.json \\
        --plot docs/img/time_to_accuracy.png
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import statistics
from collections.abc import Callable
from typing import Any

import overhead  # benchmarks/overhead.py (a script's own folder is on sys.path)
import torch
import torch.nn.functional as F

from onecycle.config import RECIPES, native_mixed_precision
from onecycle.data import Loader, load_dataset
from onecycle.models import get_model
from onecycle.run import FitConfig, run_fit

PREVIOUS = dict(model="cnn", amp=False, channels_last=False, label_smoothing=0.0)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        with autocast():
            correct += int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
    model.train()
    return correct / len(x)


def _timed_epochs(
    model: torch.nn.Module, loader: Loader, epochs: int, step: Callable[[Any, Any], None],
    score: Callable[[], float],
) -> dict[str, Any]:  # fmt: skip
    """Training seconds per epoch (``overhead.py``'s timing) and ``score()`` after each."""
    accs: list[float] = []
    seconds = overhead._epoch_times(model, loader, epochs, step, lambda: accs.append(score()))
    return {"epoch_seconds": seconds, "acc_per_epoch": accs, "test_accuracy": accs[-1]}


def hand_written(data: Any, epochs: int, seed: int) -> dict[str, Any]:
    """benchmarks/overhead.py's loop: the yardstick CNN, OneCycleLR at its defaults."""
    torch.manual_seed(seed)
    model = get_model("cnn", data.input_shape, 10)
    loader = Loader(data.x_train, data.y_train, 256, seed=seed)
    accs: list[float] = []

    def score() -> None:  # not timed
        accs.append(evaluate(model, data.x_test, data.y_test, contextlib.nullcontext))

    seconds = overhead.hand_written(model, loader, epochs, 0.2, 5e-4, after_epoch=score)
    return {"epoch_seconds": seconds, "acc_per_epoch": accs, "test_accuracy": accs[-1]}


def cli_recipe(epochs: int, seed: int, **overrides: Any) -> dict[str, Any]:
    """What ``onecycle fit --dataset fashion-mnist`` runs (plus ``overrides``)."""
    cfg = FitConfig(dataset="fashion-mnist", epochs=epochs, seed=seed, out=None,
                    progress=False, **overrides)  # fmt: skip
    res = run_fit(cfg)
    rec = res.learner.recorder
    return {
        "epoch_seconds": list(rec.train_seconds),
        "acc_per_epoch": [row["accuracy"] for row in rec.rows],
        "test_accuracy": res.metrics["final"]["test_accuracy"],
        "config": {k: res.metrics["config"][k] for k in
                   ("model", "amp", "channels_last", "label_smoothing", "lr_max", "bs", "wd")},
    }  # fmt: skip


def schedule_free(data: Any, epochs: int, seed: int, lr: float) -> dict[str, Any]:
    """AdamWScheduleFree on the new recipe's model, data path, bf16 and label smoothing."""
    from schedulefree import AdamWScheduleFree

    r = RECIPES["fashion-mnist"]
    torch.manual_seed(seed)
    model = get_model(r["model"], data.input_shape, 10).to(memory_format=torch.channels_last)
    loader = Loader(data.x_train, data.y_train, r["bs"], seed=seed)
    total = epochs * len(loader)
    opt = AdamWScheduleFree(model.parameters(), lr=lr, warmup_steps=max(1, total // 20),
                            weight_decay=r["wd"])  # fmt: skip
    bf16 = native_mixed_precision()

    def autocast() -> Any:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        with autocast():
            out = model(xb)
        F.cross_entropy(out.float(), yb, label_smoothing=r["label_smoothing"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def score() -> float:
        opt.eval()  # the averaged weights; batch-norm statistics recomputed at them
        model.train()
        with torch.no_grad(), autocast():
            for xb, _ in itertools.islice(loader, 50):
                model(xb)
        acc = evaluate(model, data.x_test, data.y_test, autocast)
        opt.train()
        return acc

    opt.train()
    return _timed_epochs(model, loader, epochs, step, score)


def reach(runs: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The cheapest run (in E) of ``runs`` whose final accuracy reaches ``target``."""
    hits = [r for r in runs if r["test_accuracy"] >= target]
    return min(hits, key=lambda r: r["train_E"]) if hits else None


def plot(rows: list[dict[str, Any]], E: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors: dict[str, Any] = {}
    for r in rows:
        x = list(itertools.accumulate(s / E for s in r["epoch_seconds"]))
        label = None if r["arm"] in colors else r["arm"]
        c = colors.setdefault(r["arm"], f"C{len(colors)}")
        ax.plot(x, [100 * a for a in r["acc_per_epoch"]], "-", color=c, alpha=0.35, lw=1)
        ax.plot(x[-1], 100 * r["test_accuracy"], "o", color=c, label=label)
    for t in (92, 93, 94):
        ax.axhline(t, color="grey", lw=0.6, ls=":")
    for e in (2, 6):
        ax.axvline(e, color="grey", lw=0.6, ls="--")
    ax.set_ylim(86, 95)
    ax.set_xlabel("training time / E (E: one epoch of the hand-written yardstick loop)")
    ax.set_ylabel("Fashion-MNIST test accuracy (%)")
    ax.set_title("Accuracy after each epoch (lines) and at the end of each run (dots)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the new recipe")
    ap.add_argument("--hand-budgets", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--previous-budgets", type=int, nargs="+", default=[4])
    ap.add_argument("--new-budgets", type=int, nargs="+", default=[3, 5],
                    help="epochs of the new recipe (5: its default)")  # fmt: skip
    ap.add_argument("--sf-lrs", type=float, nargs="*", default=[0.0025, 0.025])
    ap.add_argument("--sf-epochs", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    rows: list[dict[str, Any]] = []

    def record(arm: str, epochs: int, seed: int, r: dict[str, Any]) -> None:
        r.update(arm=arm, epochs=epochs, seed=seed, train_seconds=sum(r["epoch_seconds"]))
        rows.append(r)
        print(f"{arm:34s} {epochs:2d} ep  seed {seed}  acc {r['test_accuracy']:.4f}  "
              f"train {r['train_seconds']:7.1f}s", flush=True)  # fmt: skip

    hand = args.hand_budgets
    # the yardstick runs first and last: E is measured at both ends of the run
    record("hand-written OneCycleLR", hand[0], 0, hand_written(data, hand[0], 0))
    for epochs in args.previous_budgets:
        record("previous recipe", epochs, 0, cli_recipe(epochs, 0, **PREVIOUS))
    for seed in range(args.seeds):
        for epochs in args.new_budgets:
            record("new recipe", epochs, seed, cli_recipe(epochs, seed))
    for lr in args.sf_lrs:
        record(f"schedule-free AdamW lr {lr:g}", args.sf_epochs, 0,
               schedule_free(data, args.sf_epochs, 0, lr))  # fmt: skip
    for epochs in hand[1:]:
        record("hand-written OneCycleLR", epochs, 0, hand_written(data, epochs, 0))

    yard_runs = [r for r in rows if r["arm"] == "hand-written OneCycleLR"]
    E = statistics.median(s for r in yard_runs for s in r["epoch_seconds"])
    first, last = (statistics.median(r["epoch_seconds"]) for r in (yard_runs[0], yard_runs[-1]))
    for r in rows:
        r["train_E"] = r["train_seconds"] / E
    summary: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        runs = [r for r in rows if r["arm"] == arm]
        s: dict[str, Any] = {}
        for epochs in sorted({r["epochs"] for r in runs}):
            rs = [r for r in runs if r["epochs"] == epochs]
            accs = [r["test_accuracy"] for r in rs]
            s[f"{epochs} epochs"] = {
                "acc_mean": statistics.mean(accs), "acc_min": min(accs), "acc_max": max(accs),
                "seeds": len(rs), "E_mean": statistics.mean(r["train_E"] for r in rs),
            }  # fmt: skip
        for target in (0.92, 0.93, 0.94):
            # a budget reaches a target only if every seed run at it does
            ok = [e for e in sorted({r["epochs"] for r in runs}) if all(
                r["test_accuracy"] >= target for r in runs if r["epochs"] == e)]  # fmt: skip
            s[f"reaches {target:.0%}"] = (
                {"epochs": ok[0], "E": s[f"{ok[0]} epochs"]["E_mean"]} if ok else None)  # fmt: skip
        summary[arm] = s
    out = {
        "E_seconds": E, "E_first_run": first, "E_last_run": last, "threads": args.threads,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "bf16_native": native_mixed_precision(), "rows": rows, "summary": summary,
    }  # fmt: skip
    print(f"E = {E:.2f} s (first run {first:.2f}, last run {last:.2f})")
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.plot:
        plot(rows, E, args.plot)


if __name__ == "__main__":
    main()
