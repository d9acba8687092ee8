"""Fashion-MNIST test accuracy at equal training time, in units of E, side by side in one run.

E is the time the hand-written yardstick loop (``benchmarks/overhead.py``'s: the yardstick
CNN, 60k samples, batch 256, SGD Nesterov with ``torch.optim.lr_scheduler.OneCycleLR``)
takes for one epoch, measured here, in this process: the median epoch of that arm's runs.
For each budget (default 1, 2, 5 and 10 E) every arm gets that much training time:

- ``hand-written OneCycleLR``: that loop (max_lr 0.2, its defaults, L2 wd 5e-4), fp32,
  for as many epochs as the budget has E (one seed);
- ``onecycle (fast recipe)``: ``onecycle fit --dataset fashion-mnist --epochs N`` at the
  budgets up to 5 E, and ``onecycle (best recipe)``: ``... --recipe best --epochs N`` at
  5 E and up (``--seeds`` seeds each); N is the most epochs that fit the budget (with
  the 5% slack below), from the recipe's epoch time in E measured at the start of this
  run (the second epoch of a two-epoch run of each, over the yardstick's warm epoch);
- ``schedule-free AdamW`` at its default LR (0.0025) and at 10x: ``AdamWScheduleFree`` on
  the same recipe's model, augmentation, bf16, label smoothing and batch size, 5% warm-up,
  evaluated at the averaged weights (``optimizer.eval()``) after recomputing batch-norm
  statistics on 50 training batches, as its README says. It needs no schedule length: one
  run per seed and recipe, read at each budget after the last epoch that fits it;
- ``Prodigy + cosine``: ``prodigyopt.Prodigy`` (lr 1, its defaults, the recipe's weight
  decay) with ``CosineAnnealingLR`` over the run, on the same models (one seed).

Every run on a model trained with flips (the best recipe's) is also scored after its last
epoch without and with each test-time augmentation of ``onecycle.tta`` (``tta``: "none",
"flip", "flip+shift"; schedule-free at its averaged weights), for every arm alike.

Time counts training only (evaluation after each epoch is not timed, for every arm); a run
counts at a budget when its training time is within 5% of it (the clock's noise), and the
summary says which did not. The schedule-free and Prodigy arms need the optional
``schedulefree`` / ``prodigyopt`` (``make bench-deps``).

    .venv/bin/python benchmarks/time_to_accuracy.py --json docs/results/time_to_accuracy_v2.json \\
        --plot docs/img/time_to_accuracy.png
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import platform
import statistics
from collections.abc import Callable
from typing import Any

import overhead  # benchmarks/overhead.py (a script's own folder is on sys.path)
import torch
import torch.nn.functional as F

from onecycle.config import BEST, RECIPES, TTA_VIEWS, native_mixed_precision
from onecycle.data import Loader, load_dataset
from onecycle.models import get_model
from onecycle.run import FitConfig, run_fit

RECIPE = {
    "fast": RECIPES["fashion-mnist"],
    "best": {**RECIPES["fashion-mnist"], **BEST["fashion-mnist"]},
}
SLACK = 1.05  # a run counts at a budget when its training time is within 5% of it


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        with autocast():
            correct += int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
    model.train()
    return correct / len(x)


@torch.no_grad()
def evaluate_tta(model: torch.nn.Module, data: Any) -> dict[str, float]:
    """Test accuracy without test-time augmentation ("none") and with each of TTA_VIEWS
    (the logits averaged over the views, as ``Learner.validate(tta=...)``)."""
    from onecycle import tta

    model.eval()
    out = {}
    for name in ("none", *TTA_VIEWS):
        views = [tta.identity] if name == "none" else tta.views(name)
        correct = 0
        for i in range(0, len(data.x_test), 1000):
            with _autocast():
                logits = tta.outputs(model, data.x_test[i : i + 1000], views)
            correct += int((logits.argmax(1) == data.y_test[i : i + 1000]).sum())
        out[name] = correct / len(data.x_test)
    model.train()
    return out


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


def cli_recipe(recipe: str, epochs: int, seed: int, data: Any) -> dict[str, Any]:
    """What ``onecycle fit --dataset fashion-mnist [--recipe best] --epochs N`` runs; a
    recipe that trains with flips is also scored with each of TTA_VIEWS (``tta``)."""
    cfg = FitConfig(dataset="fashion-mnist", recipe=recipe, epochs=epochs, seed=seed,  # type: ignore[arg-type]
                    out=None, progress=False)  # fmt: skip
    res = run_fit(cfg)
    rec = res.learner.recorder
    final = res.metrics["final"]
    tta = final.get("tta") or {}
    return {
        "epoch_seconds": list(rec.train_seconds),
        "acc_per_epoch": [row["accuracy"] for row in rec.rows],
        "test_accuracy": final["test_accuracy"],
        "tta_accuracy": tta.get("test_accuracy"),
        "tta_views": tta.get("views"),  # the recipe's preset
        **({"tta": evaluate_tta(res.learner.model, data)} if RECIPE[recipe].get("hflip") else {}),
    }


def _model_and_data(recipe: str, data: Any, seed: int) -> tuple[torch.nn.Module, Loader]:
    """The recipe's model (channels last) and training loader (its augmentation)."""
    r = RECIPE[recipe]
    torch.manual_seed(seed)
    model = get_model(r["model"], data.input_shape, 10).to(memory_format=torch.channels_last)
    loader = Loader(data.x_train, data.y_train, r["bs"], seed=seed,
                    crop_pad=r.get("crop_pad", 0), hflip=r.get("hflip", False))  # fmt: skip
    return model, loader


def _autocast() -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_mixed_precision())


def recompute_bn(model: torch.nn.Module, batches: Any, autocast: Callable[[], Any]) -> None:
    """Batch-norm statistics recomputed at the model's weights, in training mode, on the
    first 50 batches of ``batches`` (as schedule-free's README says)."""
    model.train()
    with torch.no_grad(), autocast():
        for xb, _ in itertools.islice(batches, 50):
            model(xb)


def other_optimizer(recipe: str, data: Any, epochs: int, seed: int, which: str,
                    lr: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """``which``: "schedule-free" (AdamWScheduleFree at ``lr``, 5% warm-up, scored at its
    averaged weights with batch-norm statistics recomputed) or "prodigy" (Prodigy with a
    cosine over the run), on the recipe's model, data path, bf16 and label smoothing."""
    r = RECIPE[recipe]
    model, loader = _model_and_data(recipe, data, seed)
    total = epochs * len(loader)
    sched: Any = None
    if which == "schedule-free":
        from schedulefree import AdamWScheduleFree

        opt: Any = AdamWScheduleFree(model.parameters(), lr=lr, weight_decay=r["wd"],
                                     warmup_steps=max(1, total // 20))  # fmt: skip
    else:
        from prodigyopt import Prodigy

        opt = Prodigy(model.parameters(), lr=lr, weight_decay=r["wd"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        with _autocast():
            out = model(xb)
        F.cross_entropy(out.float(), yb, label_smoothing=r["label_smoothing"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()

    def averaged(fn: Callable[[], Any]) -> Any:
        if which != "schedule-free":
            return fn()
        opt.eval()  # the averaged weights; batch-norm statistics recomputed at them
        loader.set_epoch(loader.epoch)  # on the same 50 batches each time (the epoch's first)
        recompute_bn(model, loader, _autocast)
        out = fn()
        opt.train()
        return out

    if which == "schedule-free":
        opt.train()
    res = _timed_epochs(model, loader, epochs, step,
                        lambda: averaged(lambda: evaluate(model, data.x_test, data.y_test,
                                                          _autocast)))  # fmt: skip
    if r.get("hflip"):  # the final weights with test-time augmentation, as the recipe's
        res["tta"] = averaged(lambda: evaluate_tta(model, data))
    return res


def _ends(row: dict[str, Any], E: float) -> list[float]:
    """When each epoch of a run ends, in E of training time."""
    return list(itertools.accumulate(s / E for s in row["epoch_seconds"]))


def at_budget(row: dict[str, Any], budget: float, E: float) -> float | None:
    """A run's accuracy at ``budget`` E: a fixed-length run's final accuracy if it fits,
    an anytime run's (schedule-free's) after its last epoch that fits; None if none."""
    ends = _ends(row, E)
    if not row.get("anytime"):
        return row["test_accuracy"] if ends[-1] <= budget * SLACK and row["budget"] == budget \
            else None  # fmt: skip
    if budget > row["budget"]:  # an anytime run is read only up to the budget it ran for
        return None
    fits = [i for i, t in enumerate(ends) if t <= budget * SLACK]
    return row["acc_per_epoch"][fits[-1]] if fits else None


def _stats(accs: list[float]) -> dict[str, Any]:
    return {"mean": statistics.mean(accs) if accs else None, "worst": min(accs, default=None),
            "best": max(accs, default=None), "seeds": len(accs)}  # fmt: skip


def _last_fits(row: dict[str, Any], budget: float, E: float) -> bool:
    """Whether a run's last epoch ends within ``budget`` (its final weights are read)."""
    return _ends(row, E)[-1] <= budget * SLACK


def summarize(rows: list[dict[str, Any]], budgets: list[float], E: float,
              seeds: int) -> dict[str, Any]:  # fmt: skip
    """Per arm and budget: the accuracy over seeds (mean, worst, best, seeds), and with
    each test-time augmentation where the runs have it (``tta``: only runs read after
    their last epoch); per budget, the best onecycle arm against the best schedule-free
    arm (by the worst seed, without TTA), of the arms with all ``seeds`` seeds within it."""
    out: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        s: dict[str, Any] = {}
        for b in budgets:
            runs = [
                (r, a) for r in rows if r["arm"] == arm and (a := at_budget(r, b, E)) is not None
            ]
            accs = [a for _, a in runs]
            over = [r["seed"] for r in rows if r["arm"] == arm and not r.get("anytime")
                    and r["budget"] == b and at_budget(r, b, E) is None]  # fmt: skip
            if accs or over:
                s[f"{b:g}E"] = {**_stats(accs), "over_budget_seeds": over}
                last = [r["tta"] for r, _ in runs if "tta" in r and _last_fits(r, b, E)]
                views = [v for v in (last[0] if last else []) if all(v in t for t in last)]
                if views:
                    s[f"{b:g}E"]["tta"] = {v: _stats([t[v] for t in last]) for v in views}
        out[arm] = s
    versus: dict[str, Any] = {}
    for b in budgets:
        key = f"{b:g}E"

        def best_of(prefix: str, key: str = key) -> tuple[str, dict[str, Any]] | None:
            cands = [(a, v[key]) for a, v in out.items() if a.startswith(prefix) and key in v
                     and v[key]["seeds"] == seeds]  # fmt: skip
            return max(cands, key=lambda c: c[1]["worst"]) if cands else None

        ours, sf = best_of("onecycle"), best_of("schedule-free")
        if ours and sf:
            spread = max(ours[1]["best"] - ours[1]["worst"], sf[1]["best"] - sf[1]["worst"])
            lead = ours[1]["mean"] - sf[1]["mean"]
            versus[key] = {"onecycle": ours[0], "schedule_free": sf[0], "lead_mean": lead,
                           "seed_spread": spread, "ahead": lead > spread,
                           "worst_vs_best": ours[1]["worst"] - sf[1]["best"]}  # fmt: skip
    return {"arms": out, "versus_schedule_free": versus}


def plot(rows: list[dict[str, Any]], budgets: list[float], E: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    curves = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        xs, lo, mid, hi = [], [], [], []
        for b in budgets:
            accs = [100 * a for r in rows if r["arm"] == arm
                    and (a := at_budget(r, b, E)) is not None]  # fmt: skip
            if accs:
                xs.append(b), lo.append(min(accs)), hi.append(max(accs))
                mid.append(statistics.mean(accs))
        if xs:
            curves[arm] = xs, lo, mid, hi
    for i, (arm, (xs, lo, mid, hi)) in enumerate(curves.items()):  # the best model's dashed
        ax.plot(xs, mid, "o--" if "best" in arm else "o-", color=f"C{i % 10}", label=arm,
                lw=1.5, ms=4)  # fmt: skip
        ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.18, lw=0)
        if len(xs) == 1:  # a band needs two budgets: the seed range as a bar
            ax.errorbar(xs, mid, yerr=[[mid[0] - lo[0]], [hi[0] - mid[0]]], color=f"C{i % 10}",
                        capsize=3, lw=1)  # fmt: skip
    for t in (93, 94):
        ax.axhline(t, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(budgets, [f"{b:g}E" for b in budgets])
    ax.set_ylim(88, 95.5)
    ax.set_xlabel("training time budget (E: one epoch of the hand-written yardstick loop)")
    ax.set_ylabel("Fashion-MNIST test accuracy (%)")
    ax.set_title("Accuracy at equal training time: mean over seeds, band = worst to best seed")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 5, 10],
                    help="training time budgets in E")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3,
                    help="seeds of onecycle's recipes and of schedule-free AdamW")  # fmt: skip
    ap.add_argument("--sf-lrs", type=float, nargs="*", default=[0.0025, 0.025])
    ap.add_argument("--fast-up-to", type=float, default=5, help="the fast recipe's budgets")
    ap.add_argument("--best-from", type=float, default=5, help="the best recipe's budgets")
    ap.add_argument("--no-prodigy", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--from-json", default=None, metavar="PATH",
                    help="train nothing: summarise and plot a run saved with --json")  # fmt: skip
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        saved["summary"] = summarize(saved["rows"], saved["budgets"], saved["E_seconds"],
                                     saved["seeds"])  # fmt: skip
        print(json.dumps(saved["summary"], indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(saved, f, indent=1)
        if args.plot:
            plot(saved["rows"], saved["budgets"], saved["E_seconds"], args.plot)
        return
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    budgets = sorted(args.budgets)
    rows: list[dict[str, Any]] = []

    def record(arm: str, budget: float | None, seed: int, r: dict[str, Any],
               anytime: bool = False) -> None:  # fmt: skip
        r.update(arm=arm, budget=budget, seed=seed, anytime=anytime,
                 train_seconds=sum(r["epoch_seconds"]), epochs=len(r["epoch_seconds"]))  # fmt: skip
        rows.append(r)
        print(
            f"{arm:38s} {budget or 0:4g}E {r['epochs']:2d} ep  seed {seed}  acc "
            f"{r['test_accuracy']:.4f}  train {r['train_seconds']:7.1f}s",
            flush=True,
        )

    hand = [b for b in budgets if b == int(b)]
    if len(hand) > 2 and hand[0] == 1:  # the first run plans in E: two epochs, one warm
        hand = [hand[1], hand[0], *hand[2:]]
    # the yardstick runs first and last: E is measured at both ends of the run
    record("hand-written OneCycleLR", hand[0], 0, hand_written(data, int(hand[0]), 0))
    E0 = statistics.median(rows[0]["epoch_seconds"][1:] or rows[0]["epoch_seconds"])
    plan = [(rc, b) for rc, ok in (("fast", lambda b: b <= args.fast_up_to),
                                   ("best", lambda b: b >= args.best_from))
            for b in budgets if ok(b)]  # fmt: skip
    recipes = list(dict.fromkeys(rc for rc, _ in plan))
    # each recipe's epoch time, in E, from a two-epoch run (its second epoch: warm)
    ratio = {}
    for recipe in recipes:
        r = cli_recipe(recipe, 2, 0, data)
        ratio[recipe] = r["epoch_seconds"][-1] / E0
        record(f"calibration ({recipe} recipe, 2 epochs)", None, 0, r)

    def epochs(recipe: str, b: float) -> int:
        return max(1, math.floor(b * SLACK / ratio[recipe]))  # as the anytime arms are read

    for seed in range(args.seeds):
        for recipe, b in plan:
            record(f"onecycle ({recipe} recipe)", b, seed, cli_recipe(recipe, epochs(recipe, b),
                                                                     seed, data))  # fmt: skip
    for recipe in recipes:
        top = max(b for rc, b in plan if rc == recipe)
        for lr in args.sf_lrs:
            name = f"schedule-free AdamW {'default' if lr == 0.0025 else f'lr {lr:g}'}"
            for seed in range(args.seeds):
                record(
                    f"{name} ({recipe} model)",
                    top,
                    seed,
                    other_optimizer(recipe, data, epochs(recipe, top), seed, "schedule-free", lr),
                    anytime=True,
                )
        if not args.no_prodigy:
            for b in [b for rc, b in plan if rc == recipe]:
                record(f"Prodigy + cosine ({recipe} model)", b, 0, other_optimizer(
                    recipe, data, epochs(recipe, b), 0, "prodigy"))  # fmt: skip
    for b in hand[1:]:
        record("hand-written OneCycleLR", b, 0, hand_written(data, int(b), 0))

    yard = [r for r in rows if r["arm"] == "hand-written OneCycleLR"]
    E = statistics.median(s for r in yard for s in r["epoch_seconds"])
    first, last = (statistics.median(r["epoch_seconds"]) for r in (yard[0], yard[-1]))
    for r in rows:
        r["train_E"] = r["train_seconds"] / E
    summary = summarize(rows, budgets, E, args.seeds)
    out = {
        "E_seconds": E, "E_first_run": first, "E_last_run": last, "threads": args.threads,
        "epoch_E": ratio, "budgets": budgets, "seeds": args.seeds,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "bf16_native": native_mixed_precision(), "rows": rows, "summary": summary,
    }  # fmt: skip
    print(f"E = {E:.2f} s (first run {first:.2f}, last run {last:.2f}); epoch in E: {ratio}")
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.plot:
        plot(rows, budgets, E, args.plot)


if __name__ == "__main__":
    main()
