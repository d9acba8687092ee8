"""Per-epoch cost of onecycle's Learner against a hand-written PyTorch loop.

Same model, data, batch size, optimizer and 1cycle schedule; the hand-written loop uses
``torch.optim.lr_scheduler.OneCycleLR``. The two alternate within one process (A B A B
...) so that machine noise hits both alike; the result is the ratio of median epoch
times (Learner / hand-written). Target: <= 1.02.

    .venv/bin/python benchmarks/overhead.py --dataset mnist1d --repeats 7
    .venv/bin/python benchmarks/overhead.py --dataset fashion-mnist --train-samples 15000
    # the fast recipe (airnet, channels_last, bf16 autocast, label smoothing, decoupled wd)
    .venv/bin/python benchmarks/overhead.py --dataset fashion-mnist --recipe fast \
        --train-samples 20000 --repeats 5
    # the best recipe (the same, with random crops and flips in the loader on both sides)
    .venv/bin/python benchmarks/overhead.py --dataset fashion-mnist --recipe best \
        --train-samples 20000 --repeats 5

fastai's ``fit_one_cycle`` joins the comparison when fastai is installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from onecycle import Learner, sgd
from onecycle.data import Loader, load_dataset
from onecycle.models import get_model


def hand_written(model, loader, epochs, lr_max, wd, after_epoch=None):
    """The yardstick loop: SGD (Nesterov, L2 weight decay) and ``OneCycleLR`` at its
    defaults, fp32 (``time_to_accuracy.py`` runs it too, scoring after each epoch)."""
    opt = torch.optim.SGD(
        model.parameters(), lr=lr_max, momentum=0.9, nesterov=True, weight_decay=wd
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr_max, total_steps=epochs * len(loader))

    def step(xb, yb):
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    return _epoch_times(model, loader, epochs, step, after_epoch)


def _epoch_times(model, loader, epochs, step, after_epoch=None):
    """Training seconds of each epoch of ``step(xb, yb)`` over ``loader``;
    ``after_epoch()``, if given, runs after each epoch, untimed."""
    times = []
    for epoch in range(epochs):
        model.train()
        loader.set_epoch(epoch)
        t = time.perf_counter()
        for xb, yb in loader:
            step(xb, yb)
        times.append(time.perf_counter() - t)
        if after_epoch is not None:
            after_epoch()
    return times


def hand_written_fast(model, loader, epochs, lr_max, wd):
    """The fast recipe by hand: channels_last, bf16 autocast (where native), label smoothing
    0.1, OneCycleLR shaped like fit_one_cycle's defaults, decoupled wd on ndim > 1 params."""
    from onecycle.config import native_mixed_precision

    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr_max, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr_max, total_steps=epochs * len(loader), pct_start=0.25, div_factor=25,
        final_div_factor=4000, base_momentum=0.85, max_momentum=0.95,
    )  # fmt: skip
    decay = [p for p in model.parameters() if p.ndim > 1]
    bf16 = native_mixed_precision()

    def step(xb, yb):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
        loss.backward()
        with torch.no_grad():
            torch._foreach_mul_(decay, 1.0 - opt.param_groups[0]["lr"] * wd)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    return _epoch_times(model, loader, epochs, step)


def with_learner_fast(model, loader, epochs, lr_max, wd):
    """What ``onecycle fit --dataset fashion-mnist`` builds: the Learner with the recipe."""
    import functools

    from onecycle import Callback, MixedPrecision
    from onecycle.config import native_mixed_precision

    timer = type("Timer", (_Timer, Callback), {})()
    cbs = [timer, MixedPrecision()] if native_mixed_precision() else [timer]
    learn = Learner(model.to(memory_format=torch.channels_last), loader, opt_func=sgd, wd=wd,
                    loss_func=functools.partial(F.cross_entropy, label_smoothing=0.1),
                    cbs=cbs)  # fmt: skip
    learn.fit_one_cycle(epochs, lr_max)
    return timer.times


class _Timer:
    def __init__(self):
        self.times = []

    def before_epoch(self, learn):
        self.t = time.perf_counter()

    def after_train(self, learn):
        self.times.append(time.perf_counter() - self.t)


def with_learner(model, loader, epochs, lr_max, wd):
    from onecycle import Callback

    timer = type("Timer", (_Timer, Callback), {})()
    learn = Learner(model, loader, loss_func=F.cross_entropy, opt_func=sgd, wd=wd, cbs=[timer])
    learn.fit_one_cycle(epochs, lr_max, div_final=2.5e5, pct_start=0.3)
    return timer.times


def with_fastai(model, x, y, bs, epochs, lr_max, wd):  # pragma: no cover - optional
    from fastai.callback.core import Callback as FCallback
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner as FLearner
    from fastai.optimizer import SGD as FSGD

    class T(FCallback):
        def before_fit(self):
            self.times = []

        def before_epoch(self):
            self.t = time.perf_counter()

        def after_train(self):
            self.times.append(time.perf_counter() - self.t)

    ds = list(zip(x, y))
    dls = DataLoaders.from_dsets(ds, ds[:bs], bs=bs, shuffle=True, drop_last=False)
    t = T()
    learn = FLearner(dls, model, loss_func=F.cross_entropy, opt_func=FSGD, cbs=[t])
    learn.fit_one_cycle(epochs, lr_max, wd=wd)
    return t.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "fashion-mnist"])
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (first is warm-up)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each, alternating")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", choices=["plain", "fast", "best"], default="plain",
                    help="fast / best: the fashion-mnist recipes on both sides")  # fmt: skip
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset)
    x, y = data.x_train, data.y_train
    if args.train_samples:
        x, y = x[: args.train_samples], y[: args.train_samples]
    model_name, bs, lr = (
        ("cnn", 256, 0.2) if args.dataset == "fashion-mnist" else ("cnn1d", 100, 0.3)
    )
    wd = 5e-4
    hand, ours = hand_written, with_learner
    augment: dict[str, object] = {}
    if args.recipe != "plain":
        if args.dataset != "fashion-mnist":
            ap.error(f"--recipe {args.recipe} is fashion-mnist's")
        from onecycle.config import BEST, RECIPES

        r = {**RECIPES["fashion-mnist"], **(BEST["fashion-mnist"] if args.recipe == "best" else {})}
        model_name, wd, hand, ours = r["model"], r["wd"], hand_written_fast, with_learner_fast
        augment = {"crop_pad": r.get("crop_pad", 0), "hflip": r.get("hflip", False)}

    runners = {
        "hand-written + OneCycleLR": lambda m, dl: hand(m, dl, args.epochs, lr, wd),
        "onecycle Learner": lambda m, dl: ours(m, dl, args.epochs, lr, wd),
    }
    try:
        import fastai  # noqa: F401

        runners["fastai fit_one_cycle"] = lambda m, dl: with_fastai(
            m, x, y, bs, args.epochs, lr, wd
        )
    except ImportError:
        pass
    epoch_times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.repeats):
        for name, run in runners.items():
            torch.manual_seed(r)
            model = get_model(model_name, data.input_shape, 10)
            loader = Loader(x, y, bs, seed=r, **augment)  # type: ignore[arg-type]
            epoch_times[name].extend(run(model, loader)[1:])  # drop the warm-up epoch
    base = statistics.median(epoch_times["hand-written + OneCycleLR"])
    results = {
        "dataset": args.dataset, "recipe": args.recipe, "samples": len(x), "batch_size": bs,
        "model": model_name,
        "epochs_per_run": args.epochs, "repeats": args.repeats, "threads": args.threads,
        "torch": torch.__version__,
        "median_epoch_seconds": {k: statistics.median(v) for k, v in epoch_times.items()},
        "ratio_to_hand_written": {k: statistics.median(v) / base for k, v in epoch_times.items()},
    }  # fmt: skip
    for k, v in epoch_times.items():
        print(
            f"{k:28s} median epoch {statistics.median(v):7.3f}s  "
            f"ratio {statistics.median(v) / base:.3f}  (n={len(v)})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
