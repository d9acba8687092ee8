"""The Learner a typed config describes: data, model, optimizer, ``wd``, and its schedules.

The build half of ``onecycle fit``: ``build_learner`` turns a resolved ``FitConfig`` into
the Learner the command trains (its data set and model, or a ``--factory``'s), and
``schedules_for`` into the ``{hyper: schedule}`` it trains with (what ``onecycle
schedule`` previews). ``recipe(NAME)`` gives the same from Python::

    r = recipe("mnist1d")
    r.learner().fit_one_cycle(r.epochs, r.lr_max)  # onecycle fit --dataset mnist1d

Running a config (the fit, ``metrics.json``, the plots) is in ``onecycle.run``, which
re-exports these names; the output folder it holds is in ``onecycle.run_folder``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from onecycle import distributed as D
from onecycle import schedules as S
from onecycle.callbacks import Callback, GradientAccumulation, GradientClip, MixedPrecision
from onecycle.config import BEST, RECIPES, FitConfig
from onecycle.errors import ConfigError
from onecycle.learner import Learner, accuracy, adamw, sgd

__all__ = ["Recipe", "build_learner", "recipe", "schedules_for"]

log = logging.getLogger(__name__)


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
    name: str = "fast"  # which of the data set's recipes: "fast" or "best"
    crop_pad: int = 0
    hflip: bool = False
    tta: str | None = None  # the test-time augmentation it reports (learn.validate(tta=...))

    def config(self, **overrides: Any) -> FitConfig:
        """The ``FitConfig`` of ``onecycle fit --dataset NAME`` (``overrides``: any of its
        fields, e.g. ``seed=1``, ``train_samples=2000``), resolved; no output folder."""
        overrides.setdefault("out", None)
        overrides.setdefault("recipe", self.name)
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


def recipe(dataset: str, name: str = "fast") -> Recipe:
    """The recipe ``onecycle fit --dataset DATASET`` trains with (``Recipe``), and the
    Learner built from it: ``recipe("mnist1d").learner()``; ``name="best"`` is
    ``--recipe best`` (``onecycle.config.BEST``).

    >>> r = recipe("fashion-mnist", "best")
    >>> r.model, r.epochs, r.crop_pad, r.hflip, r.tta
    ('airnet', 25, 2, True, 'flip+shift')
    """
    if dataset not in RECIPES:
        raise ConfigError("dataset", dataset, f"one of {', '.join(RECIPES)}")
    if name not in ("fast", "best") or (name == "best" and dataset not in BEST):
        raise ConfigError("name", name, f"'fast', or 'best' for {', '.join(BEST)}")
    r = {**RECIPES[dataset], **(BEST[dataset] if name == "best" else {})}
    return Recipe(dataset, r["model"], r["opt"], float(r["lr_max"]), int(r["bs"]),
                  float(r["wd"]), int(r["epochs"]), bool(r["amp"]), bool(r["channels_last"]),
                  float(r["label_smoothing"]), name, int(r.get("crop_pad", 0)),
                  bool(r.get("hflip", False)), r.get("tta"))  # fmt: skip
