"""One training run from a typed config: data, model, Learner, schedule, results on disk.

This is what ``onecycle fit`` and ``onecycle lr-find`` execute; from Python::

    result = run_fit(FitConfig(dataset="mnist1d", epochs=10, lr_max="auto", out="runs/x"))
    result.metrics["final"]["test_accuracy"], result.files["loss_plot"]

(exercised end to end by ``tests/test_cli.py``). Here: running the config (``run_fit``,
``run_lr_find``), what it reports and writes (``metrics.json``, plots, ``auto_report``).
The Learner and schedules a config describes are built in ``onecycle.run_build``
(``build_learner``, ``schedules_for``, ``Recipe``); the output folder is held by
``onecycle.run_folder`` (``own_out``). Both are re-exported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import torch

from onecycle import distributed as D
from onecycle._version import __version__
from onecycle.auto import AutoResult
from onecycle.callbacks import (
    Callback,
    GradientAccumulation,
    GradientClip,
    MixedPrecision,
    ProgressBar,
)
from onecycle.checkpoint import Checkpoint
from onecycle.config import RECIPES, FitConfig, check_out, describe
from onecycle.learner import Learner
from onecycle.range_test import RangeTestResult
from onecycle.run_build import Recipe, build_learner, recipe, schedules_for
from onecycle.run_folder import _write_json, own_out

__all__ = [
    "RECIPES",
    "FitConfig",
    "Recipe",
    "RunResult",
    "auto_report",
    "build_learner",
    "check_out",
    "own_out",
    "recipe",
    "run_fit",
    "run_lr_find",
    "schedules_for",
    "weights_sha256",
]

log = logging.getLogger(__name__)

# --budget without --epochs: no cap in practice (the time ends the run long before)
NO_EPOCH_CAP = 1_000_000


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's ``state_dict``: for each entry in order, its name, dtype,
    shape and raw bytes (contiguous, on the CPU). Equal hashes mean bit-identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fit(learn: Learner, cfg: FitConfig, cbs: list[Callback]) -> None:
    """Train as ``cfg`` says (``lr_max="auto"`` only with one-cycle: the search and the run
    that continues its pick, in ``fit_one_cycle``)."""
    assert cfg.lr_max is not None and cfg.div_final is not None
    lr, n_epoch = cfg.lr_max, cfg.epochs if cfg.epochs is not None else NO_EPOCH_CAP
    resume = "auto" if cfg.resume else cfg.resume_from
    budget = cfg.budget
    if cfg.schedule == "one-cycle":
        learn.fit_one_cycle(
            n_epoch, lr, cfg.div, cfg.div_final, cfg.pct_start, cfg.moms, cbs=cbs,
            anneal=cfg.anneal, three_phase=cfg.three_phase, resume=resume, extend=cfg.extend,
            budget=budget, auto_budget=cfg.auto_budget,
        )  # fmt: skip
    else:  # the same spec `onecycle schedule` previews
        # with a budget a mapping: functions of progress (the step count, which only CLR
        # uses and a budget refuses, is not known before the end)
        spec = (lambda total: schedules_for(cfg, total)) if budget is None else (
            schedules_for(cfg, 1))  # fmt: skip
        learn.fit(n_epoch, lr, schedules=spec, cbs=cbs, resume=resume, extend=cfg.extend,
                  budget=budget)  # fmt: skip


@dataclass
class RunResult:
    """What a run produced: the metrics (as written to ``metrics.json``), the files
    written, and the trained learner."""

    metrics: dict[str, Any]
    files: dict[str, str]
    learner: Learner


def run_lr_find(
    cfg: FitConfig,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    mode: Literal["exp", "linear"] = "exp",
) -> tuple[RangeTestResult, dict[str, str]]:
    """The range test on ``cfg``'s model and data; ``lr_find.json`` and ``lr_find.png``
    go to ``cfg.out`` (if set)."""
    cfg = dataclasses.replace(cfg, lr_max=cfg.lr_max or 1.0)
    cfg = cfg.resolved()
    with own_out(cfg.out):
        return _run_lr_find(cfg, start_lr, end_lr, num_it, mode)


def _run_lr_find(
    cfg: FitConfig, start_lr: float, end_lr: float, num_it: int, mode: Literal["exp", "linear"]
) -> tuple[RangeTestResult, dict[str, str]]:
    learn, _ = build_learner(cfg)
    if cfg.accumulate > 1:
        learn.accumulate = cfg.accumulate
    cbs = [MixedPrecision()] if cfg.amp else []  # the sweep runs what fit would run
    res = learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, mode=mode, cbs=cbs)
    files: dict[str, str] = {}
    if cfg.out and D.is_main():
        out = Path(cfg.out)
        _write_json(out / "lr_find.json", res.to_dict())
        files["lr_find"] = str(out / "lr_find.json")
        try:
            res.plot(out / "lr_find.png")
            files["lr_find_plot"] = str(out / "lr_find.png")
        except ImportError as e:
            log.warning("no plot: %s", e)
    return res, files


def run_fit(cfg: FitConfig, *, stream: TextIO | None = None) -> RunResult:
    """Train as ``cfg`` says; write ``metrics.json`` and plots to ``cfg.out`` (if set).

    With ``lr_max="auto"`` a range test and short probes run first (``onecycle.auto``;
    everything restored afterwards); their pick becomes ``lr_max`` (for ``clr``: the
    sweep's ``clr_bounds`` set the low end). The curve is kept in ``metrics.json`` under
    ``lr_find`` (plotted to ``lr_find.png``), the candidates and probes under ``auto``.
    With ``wd="auto"``, Smith's weight-decay test at that ``lr_max`` (``auto_wd``).
    With ``budget``, the fit runs over that wall-clock time (``onecycle.budget``), at most
    ``epochs`` epochs if set; ``metrics.json`` records it under ``budget``.

    ``cfg.out`` is this run's alone (``own_out``): locked while it runs, and a fresh run
    (not ``resume``) into a folder holding another run's checkpoints is refused unless
    ``overwrite``, which clears that run's checkpoints, metrics, plots and logs first.
    """
    cfg = cfg.resolved()
    t_start = time.perf_counter()
    with own_out(cfg.out, fresh=not (cfg.resume or cfg.resume_from), overwrite=cfg.overwrite):
        if stream is not None and D.is_main():  # what is about to train, before it does
            stream.write(describe(cfg) + "\n")
        return _run_fit(cfg, stream, t_start)


def _run_fit(cfg: FitConfig, stream: TextIO | None, t_start: float) -> RunResult:
    learn, facts = build_learner(cfg)
    if D.is_distributed():
        log.info(
            "batch: %d per process x %d processes = %d (%s)",
            cfg.bs,
            D.world_size(),
            cfg.bs * D.world_size(),  # type: ignore[operator]
            "the recipe's global batch, split" if cfg.global_bs else "--bs is per process",
        )
    main = D.is_main()  # under torchrun only rank 0 writes files (and prints: ProgressBar)
    cbs: list[Callback] = [ProgressBar(stream=stream, bar=None if cfg.progress else False)]
    if cfg.accumulate > 1:
        cbs.append(GradientAccumulation(cfg.accumulate))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    if cfg.amp:
        cbs.append(MixedPrecision())
    if cfg.out:  # epoch-end checkpoints always: any interrupted run can be resumed
        cbs.append(Checkpoint(Path(cfg.out) / "checkpoints", cfg.checkpoint_every, cfg.keep))
    if cfg.log:
        from onecycle.loggers import CSVLogger, TensorBoardLogger

        logger = CSVLogger if cfg.log == "csv" else TensorBoardLogger
        cbs.append(logger(Path(cfg.out) / "logs", append=bool(cfg.resume or cfg.resume_from)))  # type: ignore[arg-type]
    files: dict[str, str] = {}
    lr_find = None
    if cfg.budget is not None:
        cap = f"at most {cfg.epochs} epochs" if cfg.epochs is not None else "no epoch cap"
        log.info("time budget %gs (%s): the schedule's progress is time used / budget",
                 cfg.budget, cap)  # fmt: skip
    total = (cfg.epochs or 0) * learn.steps_per_epoch(cbs)  # "auto" is refused with a budget
    # one-cycle at lr_max="auto": fit_one_cycle searches on prefixes of the run and continues
    # the pick's (a resumed run reads the pick from its checkpoint); otherwise the search's
    # pick (or the range test's bounds, for CLR) starts a run of its own
    in_run = cfg.lr_max == "auto" and cfg.schedule == "one-cycle" and cfg.wd != "auto"
    if in_run and cfg.out and main:
        from onecycle.auto import BUDGET, sweep_steps

        budget = cfg.auto_budget if cfg.auto_budget is not None else BUDGET
        if not sweep_steps(budget * total):  # a search too small for a sweep: one for the
            lr_find = learn.lr_find()  # figure (lr_find.png), outside the search's budget
    if cfg.lr_max == "auto" and not in_run:
        try:
            lr = learn.auto_lr_max(total, moms=cfg.moms, pct_start=cfg.pct_start, cbs=cbs,
                                   budget=cfg.auto_budget)[-1]  # fmt: skip
        finally:
            if stream is not None and main and learn.auto_result is not None:
                stream.write(auto_report(learn.auto_result))
        lr_find = learn.lr_find_result
        bounds = lr_find.suggestions["clr_bounds"].bounds if lr_find is not None else None
        cfg = dataclasses.replace(cfg, lr_max=lr)
        if cfg.schedule == "clr" and bounds:
            cfg.div = bounds[1] / bounds[0]
        if cfg.out and main and lr_find is not None:
            try:
                lr_find.plot(Path(cfg.out) / "lr_find.png", marks={"lr_max (auto)": lr})
                files["lr_find_plot"] = str(Path(cfg.out) / "lr_find.png")
            except ImportError as e:
                log.warning("no plot: %s", e)
    if cfg.wd == "auto":
        learn.wd = learn.auto_wd(cfg.lr_max, total, moms=cfg.moms, cbs=cbs)  # type: ignore[arg-type]
        cfg = dataclasses.replace(cfg, wd=learn.wd)
        if stream is not None and main and learn.auto_wd_result is not None:
            stream.write(auto_report(learn.auto_wd_result))
    learn.run_config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"}
    t_train = time.perf_counter()
    auto = learn.auto_result
    resuming = bool(cfg.resume or cfg.resume_from)  # a resumed run keeps its peak
    if in_run:
        try:
            _fit(learn, cfg, cbs)
        finally:
            if stream is not None and main and learn.auto_result is not None:
                stream.write(auto_report(learn.auto_result))
        auto = learn.auto_result
        assert auto is not None and auto.lr_max is not None
        cfg = dataclasses.replace(cfg, lr_max=auto.lr_max)
        lr_find = auto.range_test or lr_find
        if lr_find is not None and cfg.out and main:
            mark = {"lr_max (auto)": auto.lr_max}
            try:
                lr_find.plot(Path(cfg.out) / "lr_find.png", marks=mark)
                files["lr_find_plot"] = str(Path(cfg.out) / "lr_find.png")
            except ImportError as e:
                log.warning("no plot: %s", e)
        if stream is not None and main:
            for r in auto.rollbacks:
                stream.write(f"lr_max={r['lr_max']:.3g} collapsed at step {r['step']} "
                             f"({r['reason']}): run again lower\n")  # fmt: skip
    elif auto is not None and auto.lr_max is not None and not resuming:
        from onecycle.fallback import fit_with_fallbacks

        def attempt(peak: float, extra: list[Callback]) -> None:
            learn.run_config["lr_max"] = peak
            _fit(learn, dataclasses.replace(cfg, lr_max=peak), [*cbs, *extra])

        pct = cfg.pct_start if cfg.schedule == "one-cycle" else None
        peak = fit_with_fallbacks(learn, attempt, auto, total, pct, cbs)
        cfg = dataclasses.replace(cfg, lr_max=peak)
        if stream is not None and main:
            for r in auto.rollbacks:
                stream.write(f"lr_max={r['lr_max']:.3g} collapsed at step {r['step']} "
                             f"({r['reason']}): run again from the start lower\n")  # fmt: skip
    else:
        _fit(learn, cfg, cbs)
    train_seconds = time.perf_counter() - t_train
    final = learn.validate() if learn.valid_data is not None else {}
    tta = learn.validate(tta=cfg.tta) if cfg.tta and learn.valid_data is not None else None
    rec = learn.recorder
    metrics: dict[str, Any] = {
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"},
        "facts": facts,
        "epochs": rec.rows,
        "steps": {k: [v[-1] for v in vals] for k, vals in rec.hypers.items()},
        "final": {
            "test_accuracy": final.get("accuracy"),
            "test_loss": final.get("valid_loss"),
            "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - t_start,
            "optimizer_steps": len(rec.lrs),
            "weights_sha256": weights_sha256(learn.model),
            "tta": None
            if tta is None
            else {
                "views": cfg.tta,
                "test_accuracy": tta.get("accuracy"),
                "test_loss": tta.get("valid_loss"),
            },
        },
        "versions": {"torch": torch.__version__, "onecycle": _version()},
        "world_size": D.world_size(),
        "batch": {
            "per_process": cfg.bs,
            "processes": D.world_size(),
            "accumulate": cfg.accumulate,
            "global": (cfg.bs or 0) * D.world_size() * cfg.accumulate,
            "source": "recipe (global, split across processes)"
            if cfg.global_bs
            else ("bs (per process)" if not cfg.factory else "factory (its loaders)"),
        },
    }
    if learn.budget is not None:  # the budget, the steps it allowed, the time the fit took
        metrics["budget"] = learn.budget.report()
    if lr_find is not None:
        metrics["lr_find"] = lr_find.to_dict()
    if learn.auto_result is not None:
        metrics["auto"] = {k: v for k, v in learn.auto_result.to_dict().items()
                           if k != "range_test"}  # fmt: skip
    if learn.auto_wd_result is not None:
        metrics["auto_wd"] = learn.auto_wd_result.to_dict()
    if cfg.out and main:
        out = Path(cfg.out)
        _write_json(out / "metrics.json", metrics)
        files["metrics"] = str(out / "metrics.json")
        try:
            for kind, name, plot in (
                ("loss_plot", "loss.png", rec.plot_loss),
                ("schedule_plot", "schedule.png", rec.plot_sched),
            ):
                plot(out / name)
                files[kind] = str(out / name)
        except ImportError as e:
            log.warning("no plots: %s", e)
    return RunResult(metrics, files, learn)


def auto_report(auto: AutoResult) -> str:
    """A few lines on what ``lr_max="auto"`` (or ``wd="auto"``) saw and chose."""
    lines = []
    if auto.range_test is not None:
        rt = auto.range_test
        lines.append(f"range test: {len(rt.lrs)} steps, {rt.lrs[0]:.3g} to {rt.lrs[-1]:.3g} "
                     f"({rt.stop_reason})")  # fmt: skip
    if auto.probes:
        lines.append(f"  {'lr_max':>9}  {'wd':>7}  {'steps':>5}  held-back loss")
        for p in auto.probes:
            wd = "-" if p.wd is None else f"{p.wd:g}"
            loss = "diverged" if p.loss == float("inf") else f"{p.loss:.4f}"
            steps = f"{p.orders}x{p.steps}" if p.orders > 1 else str(p.steps)  # x data orders
            lines.append(f"  {p.lr_max:>9.3g}  {wd:>7}  {steps:>5}  {loss}")
    if auto.prefixes:
        what = "a duel of" if auto.probes else "search:"
        lines.append(f"{what} {len(auto.prefixes)} candidates on prefixes of this run, "
                     f"{auto.held_samples} samples held back for scoring")  # fmt: skip
        rungs = sorted({s for p in auto.prefixes for s in p.scores})
        lines.append(f"  {'lr_max':>9}  " + "  ".join(f"{f'@{r}':>9}" for r in rungs))
        for p in auto.prefixes:
            cells = [("diverged" if p.scores[r] == float("inf") else f"{p.scores[r]:.4f}")
                     if r in p.scores else "-" for r in rungs]  # fmt: skip
            mark = "  <- picked" if p.lr_max == auto.lr_max else ""
            lines.append(f"  {p.lr_max:>9.3g}  " + "  ".join(f"{c:>9}" for c in cells) + mark)
    what = f"wd={auto.wd:g}" if auto.wd is not None else (
        f"lr_max={auto.lr_max:.3g}" if auto.lr_max is not None else "no lr_max")  # fmt: skip
    cost = (
        (
            f" (the search cost {100 * auto.compute_ratio:.1f}% of this run's "
            f"{auto.total_steps} steps, beyond the run)"
        )
        if auto.steps_used
        else ""
    )
    lines.append(f"{what}: {auto.reason}{cost}")
    return "\n".join(lines) + "\n"


def _version() -> str:
    return __version__
