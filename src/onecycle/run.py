"""One training run from a typed config: data, model, Learner, schedule, results on disk.

This is what ``onecycle fit`` and ``onecycle lr-find`` execute; from Python::

    result = run_fit(FitConfig(dataset="mnist1d", epochs=10, lr_max="auto", out="runs/x"))
    result.metrics["final"]["test_accuracy"], result.files["loss_plot"]

(exercised end to end by ``tests/test_cli.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import torch
import torch.nn.functional as F

from onecycle import distributed as D
from onecycle import schedules as S
from onecycle.auto import AutoResult
from onecycle.callbacks import (
    Callback,
    GradientAccumulation,
    GradientClip,
    MixedPrecision,
    ProgressBar,
)
from onecycle.checkpoint import Checkpoint, checkpoints, clear
from onecycle.config import RECIPES, FitConfig, check_out, describe
from onecycle.errors import ConfigError
from onecycle.learner import Learner, accuracy, adamw, sgd
from onecycle.lock import FolderLock, on_main
from onecycle.range_test import RangeTestResult

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


def _load_factory(spec: str) -> Callable[[], Any]:
    """``module:function`` or ``path/to/file.py:function``."""
    if ":" not in spec:
        raise ConfigError("factory", spec, "'module:function' or 'file.py:function'")
    mod_name, fn_name = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py"):
            loader_spec = importlib.util.spec_from_file_location("_onecycle_factory", mod_name)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"cannot load {mod_name}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except (ImportError, OSError) as e:
        raise ConfigError("factory", spec, f"an importable module ({e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError("factory", spec, f"a function named {fn_name!r} in {mod_name}")
    return fn


def _build(cfg: FitConfig) -> tuple[torch.nn.Module, Any, Any, Any, dict[str, Any]]:
    """Model, train data, valid data, loss function, and facts about them."""
    from onecycle.data import Loader, load_dataset
    from onecycle.models import count_params, get_model

    torch.manual_seed(cfg.seed)
    if cfg.factory:
        made = _load_factory(cfg.factory)()
        if isinstance(made, dict):
            made = (made.get("model"), made.get("train"), made.get("valid"), made.get("loss"))
        if not isinstance(made, (tuple, list)) or len(made) != 4:
            raise ConfigError(
                "factory", cfg.factory, "a function returning (model, train, valid, loss_func)"
            )
        model, train, valid, loss = made
        facts = {"factory": cfg.factory, "params": sum(p.numel() for p in model.parameters())}
        return model, train, valid, loss, facts
    assert cfg.dataset is not None and cfg.model is not None and cfg.bs is not None
    data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    x, y = data.x_train, data.y_train
    if cfg.train_samples is not None and cfg.train_samples < len(x):
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))
        x, y = x[pick[: cfg.train_samples]], y[pick[: cfg.train_samples]]
    train = Loader(
        x, y, cfg.bs, shuffle=True, seed=cfg.seed, crop_pad=cfg.crop_pad, hflip=cfg.hflip,
        device=cfg.device,
    )  # fmt: skip
    valid = Loader(data.x_test, data.y_test, 1000, shuffle=False, device=cfg.device)
    model = get_model(cfg.model, data.input_shape, len(data.classes))
    facts = {
        "dataset": data.name, "train_samples": len(x), "test_samples": len(data.x_test),
        "model": cfg.model, "params": count_params(model),
    }  # fmt: skip
    loss: Callable[..., torch.Tensor] = F.cross_entropy
    if cfg.label_smoothing:  # the loss trained on, and the valid_loss reported
        loss = functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing)
    return model, train, valid, loss, facts


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's ``state_dict``: for each entry in order, its name, dtype,
    shape and raw bytes (contiguous, on the CPU). Equal hashes mean bit-identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def schedules_for(cfg: FitConfig, total_steps: int) -> dict[str, S.Schedule]:
    """The ``{hyper: schedule}`` a fit with ``cfg`` runs over ``total_steps`` optimizer steps
    (one param group): what ``onecycle schedule`` previews and ``onecycle fit`` trains with.

    >>> spec = schedules_for(FitConfig(schedule="step", lr_max=0.1), 100)
    >>> spec["lr"]
    StepDecay(start=0.1, gamma=0.1, milestones=(0.5, 0.75))
    """
    c = cfg.resolved() if cfg.div_final is None else cfg
    lr = float(c.lr_max)  # type: ignore[arg-type]
    assert c.div_final is not None
    if c.schedule == "one-cycle":
        return {
            "lr": S.one_cycle(lr, c.div, c.div_final, c.pct_start, c.anneal, c.three_phase),
            "momentum": S.one_cycle_moms(c.moms, c.pct_start, c.anneal, c.three_phase),
        }
    if c.schedule == "clr":
        per_epoch = max(1, total_steps // c.epochs)
        step = c.step_size if c.step_size is not None else max(1, 2 * per_epoch)
        if c.clr_mode == "exp_range":
            return {"lr": S.exp_range(lr / c.div, lr, step, total_steps, c.gamma)}
        return {"lr": getattr(S, c.clr_mode)(lr / c.div, lr, step, total_steps)}
    fixed = {
        "wsd": lambda: S.wsd(lr, c.warmup, c.cooldown_pct, c.cooldown),
        "sgdr": lambda: S.sgdr(lr, 0.0, c.cycles, c.cycle_mult),
        "const": lambda: S.const(lr),
        "step": lambda: S.step_decay(lr, 0.1, (0.5, 0.75)),
        "exp": lambda: S.exp_decay(lr, lr / c.div_final),  # type: ignore[operator]
        "time": lambda: S.time_decay(lr, lr / c.div_final),  # type: ignore[operator]
    }
    return {"lr": fixed[c.schedule]()}


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


def _batch_norm_over_processes(model: torch.nn.Module, cfg: FitConfig) -> torch.nn.Module:
    """Under torchrun with the recipe's batch split over the processes, batch norm would
    see each process's share only. On CUDA it becomes ``SyncBatchNorm`` (statistics over
    the global batch: the run one process makes); PyTorch has no CPU ``SyncBatchNorm``, so
    there the difference is said, not hidden."""
    world = D.world_size()
    if world == 1 or cfg.global_bs is None:
        return model
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if cfg.device is not None and torch.device(cfg.device).type == "cuda":
        log.info("batch norm synchronised over the %d processes (SyncBatchNorm)", world)
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log.warning("batch norm normalises each process's %d samples, not the global batch of "
                "%d: PyTorch has no SyncBatchNorm on the CPU, so this run differs slightly "
                "from one process's", cfg.bs, (cfg.bs or 0) * world)  # fmt: skip
    return model


def build_learner(
    cfg: FitConfig, cbs: Sequence[Callback] = (), progress: bool | None = False
) -> tuple[Learner, dict[str, Any]]:
    """The Learner ``cfg`` describes (data, model, optimizer, wd), and facts about them;
    ``cbs``: the Learner's callbacks; ``progress``: the Learner's (the commands give each
    fit their own ``ProgressBar``). ``cfg`` must be ``resolved()``.
    """
    model, train, valid, loss, facts = _build(cfg)
    model = _batch_norm_over_processes(model, cfg)
    if cfg.channels_last:  # 4-D weights in NHWC: oneDNN's fast convolutions (and cuDNN's)
        model = model.to(memory_format=torch.channels_last)
    learn = Learner(
        model, train, valid, loss_func=loss, metrics=[accuracy],
        opt_func=sgd if cfg.opt == "sgd" else adamw,
        # wd="auto": the range test and LR probes run at the recipe's wd
        wd=RECIPES.get(cfg.dataset or "", {}).get("wd", 0.0) if cfg.wd == "auto" else cfg.wd or 0.0,
        moms=cfg.moms, device=cfg.device, cbs=cbs, progress=progress,
    )  # fmt: skip
    return learn, facts


@dataclass(frozen=True)
class Recipe:
    """What ``onecycle fit --dataset NAME`` trains with, from Python: ``recipe(NAME)``.

    The fields are the data set's recipe (``onecycle.config.RECIPES``, measured in
    docs/benchmarks.md); ``amp`` is the recipe's wish, on only where the hardware runs it
    natively. ``learner()`` builds the Learner the command trains (the same data, model,
    seed, optimizer, ``wd``, loss with its label smoothing, mixed precision), so that
    ``learn.fit_one_cycle(r.epochs, r.lr_max)`` is the command's run, weight for weight.

    >>> r = recipe("mnist1d")
    >>> r.model, r.opt, r.lr_max, r.bs, r.wd, r.epochs
    ('cnn1d-bn', 'adamw', 0.01, 100, 0.01, 15)
    >>> learn = r.learner(train_samples=500)
    >>> type(learn.model).__name__, learn.wd
    ('Sequential', 0.01)
    """

    dataset: str
    model: str
    opt: str
    lr_max: float
    bs: int
    wd: float
    epochs: int
    amp: bool
    channels_last: bool
    label_smoothing: float

    def config(self, **overrides: Any) -> FitConfig:
        """The ``FitConfig`` of ``onecycle fit --dataset NAME`` (``overrides``: any of its
        fields, e.g. ``seed=1``, ``train_samples=2000``), resolved; no output folder."""
        overrides.setdefault("out", None)
        return FitConfig(dataset=self.dataset, **overrides).resolved()

    def learner(self, **overrides: Any) -> Learner:
        """The Learner ``onecycle fit --dataset NAME`` trains (``overrides`` as
        ``config``); with the recipe's mixed precision where the hardware has it."""
        cfg = self.config(**overrides)
        cbs: list[Callback] = [MixedPrecision()] if cfg.amp else []  # the command adds these
        cbs += [GradientAccumulation(cfg.accumulate)] if cfg.accumulate > 1 else []
        cbs += [GradientClip(cfg.clip)] if cfg.clip else []
        learn, _ = build_learner(cfg, cbs, progress=None)  # progress where someone watches
        learn.run_config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"}
        return learn


def recipe(dataset: str) -> Recipe:
    """The recipe ``onecycle fit --dataset DATASET`` trains with (``Recipe``), and the
    Learner built from it: ``recipe("mnist1d").learner()``."""
    if dataset not in RECIPES:
        raise ConfigError("dataset", dataset, f"one of {', '.join(RECIPES)}")
    r = RECIPES[dataset]
    return Recipe(dataset, r["model"], r["opt"], float(r["lr_max"]), int(r["bs"]),
                  float(r["wd"]), int(r["epochs"]), bool(r["amp"]), bool(r["channels_last"]),
                  float(r["label_smoothing"]))  # fmt: skip


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(content, indent=1, default=str))
        os.replace(tmp, path)
    except OSError as e:  # disk full: no half-written file left (the CLI says it in one line)
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None


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


# what a run writes into its folder: cleared by overwrite (checkpoints/ apart)
RUN_FILES = ("metrics.json", "metrics.json.tmp", "loss.png", "schedule.png", "lr_find.png",
             "logs/steps.csv", "logs/epochs.csv")  # fmt: skip


@contextlib.contextmanager
def own_out(
    out: str | Path | None, *, fresh: bool = False, overwrite: bool = False
) -> Iterator[Path | None]:
    """Hold ``out`` for a command: checked writable (``check_out``), locked
    (``onecycle.lock.FolderLock``: another process's command on it is refused, naming its
    pid). With ``fresh`` (a run that starts from scratch), ``out/checkpoints`` must hold
    none of another run's checkpoints, or ``overwrite`` clears them, with the earlier
    run's metrics, plots and logs (logged). Under torchrun rank 0 checks and locks, and
    every rank gets its answer. ``out=None``: nothing to hold."""
    if not out:
        yield None
        return
    folder = Path(out)
    on_main(lambda: check_out(folder))  # refused now, not after hours of training
    with FolderLock(folder):
        if fresh:
            on_main(lambda: _claim_fresh(folder, overwrite))
        yield folder


def _claim_fresh(folder: Path, overwrite: bool) -> None:
    found = checkpoints(folder / "checkpoints")
    if found and not overwrite:
        raise ConfigError(
            "out", str(folder),
            f"a folder without another run's checkpoints: {folder / 'checkpoints'} holds "
            f"{len(found)} (newest {found[0].name}); resume=True (--resume) to continue "
            "that run, overwrite=True (--overwrite) to clear its checkpoints and metrics "
            "first, or another folder",
        )  # fmt: skip
    if not overwrite:
        return
    removed = [f"{len(clear(folder / 'checkpoints'))} checkpoints"] if found else []
    files = [*(folder / n for n in RUN_FILES), *(folder / "logs").glob("events.out.tfevents.*")]
    for f in files:
        if f.is_file():
            f.unlink()
            removed.append(str(f.relative_to(folder)))
    if removed:
        log.info("overwrite: cleared the earlier run in %s (%s)", folder, ", ".join(removed))


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
    if auto.prefixes:
        lines.append(f"search: {len(auto.prefixes)} candidates on prefixes of this run, "
                     f"{auto.held_samples} samples held back for scoring")  # fmt: skip
        rungs = sorted({s for p in auto.prefixes for s in p.scores})
        lines.append(f"  {'lr_max':>9}  " + "  ".join(f"{f'@{r}':>9}" for r in rungs))
        for p in auto.prefixes:
            cells = [("diverged" if p.scores[r] == float("inf") else f"{p.scores[r]:.4f}")
                     if r in p.scores else "-" for r in rungs]  # fmt: skip
            mark = "  <- picked" if p.lr_max == auto.lr_max else ""
            lines.append(f"  {p.lr_max:>9.3g}  " + "  ".join(f"{c:>9}" for c in cells) + mark)
    if auto.probes:
        lines.append(f"  {'lr_max':>9}  {'wd':>7}  {'steps':>5}  held-back loss")
        for p in auto.probes:
            wd = "-" if p.wd is None else f"{p.wd:g}"
            loss = "diverged" if p.loss == float("inf") else f"{p.loss:.4f}"
            lines.append(f"  {p.lr_max:>9.3g}  {wd:>7}  {p.steps:>5}  {loss}")
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
    from onecycle import __version__

    return __version__
