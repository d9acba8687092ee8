"""The arms of the suite: one training run each, same model, data and epoch budget.

- ``grid``: 1cycle (fastai's form) at a given ``lr_max`` (``fine_tune``'s ``base_lr`` for
  the fine-tuning pair).
- ``auto``: ``lr_max="auto"`` (range test + probes, ``onecycle.auto``).
- ``auto_wd``: ``lr_max="auto", wd="auto"``; ``wd``: 1cycle at a given lr_max and wd.
- ``fastai_valley``: fastai's ``valley`` rule on its lagging EMA over a plain sweep with
  the optimizer's own momentum (as fastai's ``lr_find`` runs it), then 1cycle there.
- ``tlrf_steep``: torch-lr-finder's steepest-gradient point, then 1cycle there.
- ``prodigy_cos``: Prodigy (lr 1, ``safeguard_warmup=True``) with a cosine anneal.
- ``prodigy_probe``: Prodigy for a tenth of the run, read ``d * lr``, then 1cycle AdamW there.
- ``sf_adamw`` (lr 0.0025, or ``param`` x that), ``sf_sgd`` (lr 1, momentum 0.9):
  schedule-free with 5% warm-up, ``train()/eval()``, batch-norm statistics recomputed
  before evaluation (50 batches, as its README says).
- ``dadapt_adam``: D-Adaptation Adam (lr 1, decoupled wd) with a cosine anneal.

The learning-rate-free arms get the pair's weight decay through their own
``weight_decay`` (the Learner's decoupled wd is off for them: its ``lr * wd`` would use
their lr multiplier of 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tasks import Built, Task

from onecycle import Learner, adamw, sgd
from onecycle import schedules as S
from onecycle.callbacks import Callback, GradientClip
from onecycle.range_test import range_test

LN2 = math.log(2)


def _learner(task: Task, b: Built, device: str, opt_func: Any = None, wd: float | None = None,
             opt: str | None = None) -> Learner:  # fmt: skip
    name = opt or task.opt
    cbs = [GradientClip(task.clip)] if task.clip else []
    return Learner(b.model, b.train, None, loss_func=b.loss,
                   opt_func=opt_func or (sgd if name == "sgd" else adamw),
                   wd=task.wd if wd is None else wd, splitter=b.splitter,
                   device=device, cbs=cbs)  # fmt: skip


def score(task: Task, learn: Learner, b: Built) -> float:
    if task.metric == "accuracy":
        from onecycle import accuracy

        learn.metrics = [accuracy]
        return 100 * learn.validate(b.valid)["accuracy"]
    loss = learn.validate(b.valid)["valid_loss"]
    return loss / LN2 if task.metric == "bpc" else loss


def _steps(task: Task, learn: Learner) -> int:
    per_epoch = learn.steps_per_epoch()
    epochs = task.epochs + (1 if task.fine_tune else 0)
    return per_epoch * epochs


def _one_cycle(task: Task, learn: Learner, lr: Any, wd: Any = None,
               auto_budget: float | None = None) -> None:  # fmt: skip
    if task.fine_tune:
        learn.fine_tune(task.epochs, base_lr=lr, freeze_epochs=1, auto_budget=auto_budget)
    elif auto_budget is not None:
        learn.fit_one_cycle(task.epochs, lr, wd=wd, auto_budget=auto_budget)
    else:
        learn.fit_one_cycle(task.epochs, lr, wd=wd)


def run_grid(task: Task, make: Callable[[], Built], device: str, lr: float) -> dict[str, Any]:
    b = make()
    learn = _learner(task, b, device)
    _one_cycle(task, learn, lr)
    return {"lr": lr, "score": score(task, learn, b)}


def run_wd(
    task: Task, make: Callable[[], Built], device: str, lr: float, wd: float
) -> dict[str, Any]:
    b = make()
    learn = _learner(task, b, device, wd=wd)
    _one_cycle(task, learn, lr)
    return {"lr": lr, "wd": wd, "score": score(task, learn, b)}


class _Clock(Callback):
    """Seconds spent inside fit (the auto step runs before it)."""

    def before_fit(self, learn: Learner) -> None:
        self.t0 = time.perf_counter()

    def after_fit(self, learn: Learner) -> None:
        self.seconds = getattr(self, "seconds", 0.0) + time.perf_counter() - self.t0


def run_auto(
    task: Task, make: Callable[[], Built], device: str, wd_auto: bool = False,
    budget: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    b = make()
    learn = _learner(task, b, device)
    clock = _Clock()
    learn.cbs.append(clock)
    learn._cb_table = learn._bind(learn.cbs)
    t0 = time.perf_counter()
    total = _steps(task, learn)
    try:
        _one_cycle(task, learn, "auto", wd="auto" if wd_auto else None, auto_budget=budget)
    except Exception as e:  # a refusal ("no reliable lr_max") is a result, not a crash
        return {"lr": None, "score": None, "error": f"{type(e).__name__}: {e}"}
    wall = time.perf_counter() - t0
    auto = learn.auto_result
    assert auto is not None
    out = {
        "lr": auto.lr_max, "score": score(task, learn, b), "reason": auto.reason,
        "compute_ratio": auto.compute_ratio, "train_steps": total,
        "auto_seconds": wall - clock.seconds, "train_seconds": clock.seconds,
        "candidates": auto.candidates, "rollbacks": auto.rollbacks,
        "trained": auto.trained, "stalled": auto.stalled,
        "probes": [p.to_dict() for p in auto.probes],
        "prefixes": auto.to_dict().get("prefixes"), "rungs": auto.rungs,
        "start_loss": auto.start_loss, "held_samples": auto.held_samples,
        "sweep": {"lrs": auto.range_test.lrs, "losses": auto.range_test.losses,
                  "stop": auto.range_test.stop_reason} if auto.range_test else None,
    }  # fmt: skip
    if wd_auto and learn.auto_wd_result is not None:
        out["wd"] = learn.auto_wd_result.wd
        out["wd_compute_ratio"] = learn.auto_wd_result.compute_ratio
    return out


# --- peers' suggestion rules ------------------------------------------------------------------


def _lagging_valley(lrs: list[float], smoothed: list[float]) -> float:
    """fastai's ``valley``: over its lagging EMA, [n//10 : -5], the longest decreasing
    run, then 1/3 + 1/6 of the way into it."""
    n = len(smoothed)
    lo = n // 10
    s = np.asarray(smoothed[lo : n - 5])
    length = np.ones(len(s), dtype=int)
    for i in range(1, len(s)):
        prev = length[:i][s[:i] > s[i]]
        if len(prev):
            length[i] = prev.max() + 1
    end = int(np.argmax(length))
    start = max(0, end - int(length[end]))
    return float(lrs[lo + start + int((end - start) / 3) + int((end - start) / 6)])


def run_fastai_valley(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    b = make()
    learn = _learner(task, b, device)
    learn._make_opt([1e-7] * len(learn.param_groups))
    if task.fine_tune:
        learn.freeze()
    res = range_test(learn.model, learn.opt, b.loss, b.train, num_it=100)
    lr = _lagging_valley(res.lrs, res.smoothed)
    b = make()  # the same initial weights and data order again
    learn = _learner(task, b, device)
    _one_cycle(task, learn, lr)
    return {
        "lr": lr,
        "score": score(task, learn, b),
        "compute_ratio": len(res.lrs) / _steps(task, learn),
    }


def run_tlrf(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    b = make()
    from torch.utils.data import DataLoader, TensorDataset
    from torch_lr_finder import LRFinder

    learn = _learner(task, b, device)
    learn._make_opt([1e-7] * len(learn.param_groups))
    if task.fine_tune:
        learn.freeze()
    loader = DataLoader(TensorDataset(b.train.x, b.train.y), batch_size=b.train.batch_size,
                        shuffle=True)  # fmt: skip
    finder = LRFinder(learn.model, learn.opt, b.loss, device=device)
    finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100)
    lrs, losses = finder.history["lr"][10:-5], finder.history["loss"][10:-5]
    finder.reset()
    lr = float(lrs[int(np.gradient(np.asarray(losses)).argmin())])
    b = make()  # the same initial weights and data order again
    learn = _learner(task, b, device)
    _one_cycle(task, learn, lr)
    return {"lr": lr, "score": score(task, learn, b), "compute_ratio": 100 / _steps(task, learn)}


# --- learning-rate-free optimizers ------------------------------------------------------------


def _lr_free(task: Task, b: Built, device: str, make: Any, spec: dict[str, Any],
             schedule_free: bool = False) -> tuple[Learner, float]:  # fmt: skip
    learn = _learner(task, b, device, opt_func=make, wd=0.0)
    cbs: list[Callback] = []
    if schedule_free:

        class _Train(Callback):
            def before_fit(self, learn: Learner) -> None:
                learn.opt.train()  # type: ignore[union-attr]

        cbs.append(_Train())
    epochs = task.epochs + (1 if task.fine_tune else 0)
    learn.fit(epochs, 1.0, schedules=spec, cbs=cbs)
    if schedule_free:
        learn.opt.eval()  # type: ignore[union-attr]
        if task.bn:  # recompute batch-norm statistics at the averaged weights
            learn.model.train()
            with torch.no_grad():
                for i, (xb, _) in enumerate(b.train):
                    learn.model(xb)
                    if i + 1 >= 50:
                        break
    return learn, score(task, learn, b)


def run_prodigy(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    b = make()
    from prodigyopt import Prodigy

    def make(params: Any, lr: float) -> torch.optim.Optimizer:
        return Prodigy(params, lr=1.0, weight_decay=task.wd, safeguard_warmup=True)

    learn, s = _lr_free(task, b, device, make, {"lr": S.cos(1.0, 0.0)})
    return {"lr": float(learn.opt.param_groups[0]["d"]), "score": s}  # type: ignore[union-attr]


def run_prodigy_probe(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    b = make()
    from prodigyopt import Prodigy

    learn = _learner(task, b, device, wd=0.0,
                     opt_func=lambda p, lr: Prodigy(p, lr=1.0, weight_decay=task.wd,
                                                    safeguard_warmup=True))  # fmt: skip
    total = _steps(task, learn)
    probe_steps = max(10, total // 10)

    class _Stop(Callback):
        def after_step(self, learn: Learner) -> None:
            if learn.scheduler.step_count >= probe_steps:  # type: ignore[union-attr]
                from onecycle import CancelFit

                raise CancelFit

    epochs = task.epochs + (1 if task.fine_tune else 0)
    learn.fit(epochs, 1.0, schedules={"lr": S.const(1.0)}, cbs=[_Stop()])
    d = float(learn.opt.param_groups[0]["d"])  # type: ignore[union-attr]
    b = make()  # the same initial weights and data order again
    learn = _learner(task, b, device, opt="adamw")
    _one_cycle(task, learn, d)
    return {"lr": d, "score": score(task, learn, b), "compute_ratio": probe_steps / total}


def run_sf_adamw(
    task: Task, make: Callable[[], Built], device: str, mult: float = 1.0
) -> dict[str, Any]:
    b = make()
    from schedulefree import AdamWScheduleFree

    lr = 0.0025 * mult
    learn0 = _learner(task, b, device)
    warm = max(1, _steps(task, learn0) // 20)

    def make(params: Any, _: float) -> torch.optim.Optimizer:
        return AdamWScheduleFree(params, lr=lr, warmup_steps=warm, weight_decay=task.wd)

    _, s = _lr_free(task, b, device, make, {"lr": S.const(lr)}, schedule_free=True)
    return {"lr": lr, "score": s}


def run_sf_sgd(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    b = make()
    from schedulefree import SGDScheduleFree

    learn0 = _learner(task, b, device)
    warm = max(1, _steps(task, learn0) // 20)

    def make(params: Any, _: float) -> torch.optim.Optimizer:
        return SGDScheduleFree(params, lr=1.0, momentum=0.9, warmup_steps=warm,
                               weight_decay=task.wd)  # fmt: skip

    _, s = _lr_free(task, b, device, make, {"lr": S.const(1.0)}, schedule_free=True)
    return {"lr": 1.0, "score": s}


def run_dadapt(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    b = make()
    from dadaptation import DAdaptAdam

    def make(params: Any, _: float) -> torch.optim.Optimizer:
        return DAdaptAdam(params, lr=1.0, decouple=True, weight_decay=task.wd)

    learn, s = _lr_free(task, b, device, make, {"lr": S.cos(1.0, 0.0)})
    return {"lr": float(learn.opt.param_groups[0]["d"]), "score": s}  # type: ignore[union-attr]


ALTERNATIVES = {
    "fastai_valley": run_fastai_valley,
    "tlrf_steep": run_tlrf,
    "prodigy_cos": run_prodigy,
    "prodigy_probe": run_prodigy_probe,
    "sf_adamw": run_sf_adamw,
    "sf_adamw_10x": lambda t, m, d: run_sf_adamw(t, m, d, 10.0),
    "sf_sgd": run_sf_sgd,
    "dadapt_adam": run_dadapt,
}


def run_lightning(task: Task, make: Callable[[], Built], device: str) -> dict[str, Any]:
    """Lightning's ``Tuner.lr_find`` (its defaults: 100 steps from 1e-8 to 1, the
    steepest-gradient suggestion) on the same model, optimizer and data; then 1cycle."""
    import logging

    import lightning as L
    from lightning.pytorch.tuner import Tuner
    from torch.utils.data import DataLoader, TensorDataset

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    b = make()
    if task.fine_tune:
        for p in b.splitter(b.model)[0]:  # type: ignore[misc]
            p.requires_grad_(False)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.lr = b.model, 1e-3

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            return b.loss(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            params = [p for p in self.parameters() if p.requires_grad]
            if task.opt == "sgd":
                return torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True)
            return torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.99), eps=1e-5)

    loader = DataLoader(TensorDataset(b.train.x, b.train.y), batch_size=b.train.batch_size,
                        shuffle=True)  # fmt: skip
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                        max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    found = Tuner(trainer).lr_find(Module(), train_dataloaders=loader, update_attr=False)
    lr = found.suggestion() if found is not None else None
    if lr is None:
        return {"lr": None, "score": None, "error": "Lightning gave no suggestion"}
    b = make()  # the same initial weights and data order again
    learn = _learner(task, b, device)
    _one_cycle(task, learn, lr)
    return {"lr": lr, "score": score(task, learn, b), "compute_ratio": 100 / _steps(task, learn)}


ALTERNATIVES["lightning_tuner"] = run_lightning
