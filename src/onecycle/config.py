"""The typed config of one run (``FitConfig``): what ``onecycle fit`` and ``onecycle
lr-find`` are asked to do, checked before anything trains.

``FitConfig.resolved()`` fills what was left unset from the data set's recipe
(``RECIPES``) and refuses bad values with a ``ConfigError`` naming the parameter and what
is allowed; ``check_out`` makes sure the output folder is writable up front. Running the
config is ``onecycle.run``'s job.

>>> c = FitConfig(dataset="mnist1d", epochs=3, out=None).resolved()
>>> c.model, c.opt, c.bs, c.label_smoothing
('cnn1d-bn', 'adamw', 100, 0.0)
>>> FitConfig(dataset="mnist1d", epochs=0).resolved()
Traceback (most recent call last):
...
onecycle.errors.ConfigError: epochs=0 is invalid: expected an integer >= 1
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onecycle import distributed as D
from onecycle.budget import parse_budget
from onecycle.distributed import check_device
from onecycle.errors import ConfigError, check_finite, check_int, check_positive

__all__ = [
    "BEST", "RECIPES", "SCHEDULES", "TTA_VIEWS", "FitConfig", "check_out", "describe",
    "native_mixed_precision",
]  # fmt: skip

log = logging.getLogger(__name__)

SEED_MAX = 2**64 - 1  # torch.manual_seed's largest (it overflows above)

ScheduleName = Literal["one-cycle", "clr", "const", "step", "exp", "time", "sgdr", "wsd"]
SCHEDULES = ("one-cycle", "clr", "const", "step", "exp", "time", "sgdr", "wsd")

# Per data set, what trains fast and well on a 2-core CPU; each value is measured in
# docs/benchmarks.md, "A fast recipe". amp: bf16 autocast where the CPU has native bf16
# (AVX512-BF16/AMX; fp16 + GradScaler on CUDA), plain fp32 elsewhere.
RECIPES: dict[str, dict[str, Any]] = {
    "fashion-mnist": {
        "model": "airnet", "opt": "sgd", "lr_max": 0.2, "bs": 256, "wd": 5e-3, "epochs": 5,
        "amp": True, "channels_last": True, "label_smoothing": 0.1,
    },
    "mnist1d": {
        "model": "cnn1d-bn", "opt": "adamw", "lr_max": 1e-2, "bs": 100, "wd": 1e-2,
        "epochs": 15, "amp": False, "channels_last": False, "label_smoothing": 0.0,
    },
}  # fmt: skip

BEST: dict[str, dict[str, Any]] = {
    "fashion-mnist": {
        "epochs": 25, "crop_pad": 2, "hflip": True, "tta": "flip+shift",
    },
}  # fmt: skip
"""``--recipe best``: what it changes in the data set's recipe, for the best accuracy in a
short budget (docs/benchmarks.md, "The best recipe"): random crops and flips, more epochs
(the fast recipe's model: at equal time it beat a wider one), and predictions averaged over
the image, its mirror and four one-pixel shifts (``tta``)."""

TTA_VIEWS = ("flip", "flip+shift")
"""Test-time augmentation the command can report (``onecycle.tta``'s presets)."""


@dataclass
class FitConfig:
    """Everything one run depends on. ``None`` fields take the data set's recipe."""

    dataset: str | None = "mnist1d"
    recipe: Literal["fast", "best"] = "fast"  # best: BEST's changes to the data set's recipe
    data_dir: str | None = None
    download: bool = False
    factory: str | None = None
    model: str | None = None
    opt: Literal["sgd", "adamw"] | None = None
    epochs: int | None = None  # None: the recipe's; with a budget, no cap (time ends it)
    budget: float | str | None = None  # seconds or "3m": train this long (epochs: a cap)
    schedule: ScheduleName = "one-cycle"
    lr_max: float | Literal["auto"] | None = None  # "auto": searched first (onecycle.auto)
    auto_budget: float | None = None  # lr_max="auto": the search's steps / the run's
    div: float = 25.0
    div_final: float | None = None  # one-cycle: 1e5; exp/time decay: 100
    pct_start: float = 0.25
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)
    anneal: Literal["cos", "linear"] = "cos"
    three_phase: bool = False
    clr_mode: Literal["triangular", "triangular2", "exp_range"] = "triangular2"
    step_size: int | None = None
    gamma: float = 0.99994
    cycles: int = 3
    cycle_mult: float = 2.0
    warmup: float = 0.05  # wsd: warm-up fraction
    cooldown: Literal["linear", "cos", "1-sqrt"] = "1-sqrt"  # wsd: the decay's shape
    cooldown_pct: float = 0.2  # wsd: fraction of the run spent cooling down
    bs: int | None = None
    wd: float | Literal["auto"] | None = None  # "auto": Smith's weight-decay test (1cycle)
    accumulate: int = 1
    clip: float | None = None
    amp: bool | None = None  # None: the recipe's, where the hardware has it natively
    channels_last: bool | None = None  # image models in channels_last memory format
    label_smoothing: float | None = None  # cross-entropy's (None: the recipe's)
    crop_pad: int | None = None  # random-crop padding (None: the recipe's, 0 = off)
    hflip: bool | None = None  # random horizontal flips (None: the recipe's)
    tta: str | None = None  # also report accuracy with test-time augmentation ("none": off)
    train_samples: int | None = None
    seed: int = 0
    device: str | None = None
    out: str | None = "runs/fit"
    progress: bool = True
    checkpoint_every: int | None = None  # optimizer steps; epoch ends always (with out)
    keep: int = 3
    resume: bool = False  # continue from the newest good checkpoint in out/checkpoints
    resume_from: str | None = None
    extend: bool = False  # resume a shorter run of this command and lengthen it to epochs
    overwrite: bool = False  # a fresh run into out: clear its earlier run's checkpoints first
    log: Literal["csv", "tensorboard"] | None = None  # per-step logs in out/logs
    # set by resolved(): the recipe's batch is global (split across torchrun processes);
    # an explicit bs is per process. None: bs is per process.
    global_bs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> FitConfig:
        """A copy with the recipe's values filled in and every field validated."""
        if self.recipe not in ("fast", "best"):
            raise ConfigError("recipe", self.recipe, "'fast' or 'best'")
        recipe = RECIPES.get(self.dataset or "", RECIPES["mnist1d"])
        if self.recipe == "best":
            if self.factory is not None or self.dataset not in BEST:
                what = "--factory" if self.factory is not None else self.dataset
                raise ConfigError("recipe", "best", f"'fast' for {what} (a 'best' recipe "
                                  f"exists for {', '.join(BEST)})")  # fmt: skip
            recipe = {**recipe, **BEST[self.dataset]}
        c = dataclasses.replace(self)
        if c.bs is None and c.global_bs is None and c.factory is None:
            # the same command gives the same run under torchrun: the recipe's batch is the
            # global one, each of the world_size processes takes its share
            world = D.world_size()
            c.global_bs = recipe["bs"]
            c.bs = max(1, recipe["bs"] // world)
            if c.bs * world != recipe["bs"]:
                log.warning("the recipe's batch %d does not split over %d processes: "
                            "%d per process (%d in all)", recipe["bs"], world, c.bs,
                            c.bs * world)  # fmt: skip
        for name in ("model", "opt", "lr_max", "bs", "wd", "channels_last", "label_smoothing"):
            if getattr(c, name) is None:
                setattr(c, name, recipe[name])
        c.crop_pad = check_int("crop_pad", recipe.get("crop_pad", 0) if c.crop_pad is None
                               else c.crop_pad, minimum=0)  # fmt: skip
        c.hflip = recipe.get("hflip", False) if c.hflip is None else c.hflip
        if not isinstance(c.hflip, bool):
            raise ConfigError("hflip", c.hflip, "True, False or None (the recipe's)")
        c.tta = recipe.get("tta") if c.tta is None else (None if c.tta == "none" else c.tta)
        if c.tta is not None and c.tta not in TTA_VIEWS:
            raise ConfigError("tta", c.tta, f"one of {', '.join(TTA_VIEWS)}, 'none' or None")
        if c.div_final is None:
            c.div_final = 1e5 if c.schedule == "one-cycle" else 100.0
        if c.factory is None and c.dataset not in RECIPES:
            raise ConfigError("dataset", c.dataset, f"one of {', '.join(RECIPES)}")
        if c.schedule not in SCHEDULES:
            raise ConfigError("schedule", c.schedule, f"one of {', '.join(SCHEDULES)}")
        if c.opt not in ("sgd", "adamw"):
            raise ConfigError("opt", c.opt, "'sgd' or 'adamw'")
        if c.budget is not None:
            _check_budget(c)
        if c.epochs is not None or c.budget is None:
            c.epochs = check_int("epochs", recipe["epochs"] if c.epochs is None else c.epochs)
        c.div = check_finite("div", c.div)
        if c.div < 1 or (c.div == 1 and c.schedule == "clr"):
            what = "> 1 (CLR's low LR = lr_max/div)" if c.schedule == "clr" else (
                ">= 1 (the start LR = lr_max/div)")  # fmt: skip
            raise ConfigError("div", c.div, f"a finite number {what}")
        c.bs = check_int("bs", c.bs)
        c.accumulate = check_int("accumulate", c.accumulate)
        if c.lr_max != "auto":
            try:
                c.lr_max = check_positive("lr_max", c.lr_max)
            except ConfigError:  # "autox", "0.1": say that "auto" is the word
                raise ConfigError("lr_max", c.lr_max, "a finite number > 0, or 'auto'") from None
        if c.auto_budget is not None:
            if c.lr_max != "auto":
                raise ConfigError("auto_budget", c.auto_budget, "unset unless --lr-max auto")
            c.auto_budget = check_positive("auto_budget", c.auto_budget)
        if not isinstance(c.three_phase, bool):
            raise ConfigError("three_phase", c.three_phase, "True or False")
        c.device = str(check_device("device", c.device)) if c.device is not None else None
        if c.amp is None:
            c.amp = bool(recipe["amp"]) and native_mixed_precision(c.device)
            if recipe["amp"] and not c.amp:
                log.info("the recipe's mixed precision is off: %s has no native bf16 (fp32 "
                         "instead; --amp asks for it anyway)", c.device or "this CPU")  # fmt: skip
        if c.resume_from is not None and not Path(c.resume_from).exists():
            raise ConfigError("resume_from", c.resume_from,
                              "an existing checkpoint file or folder (--resume starts fresh "
                              "when OUT/checkpoints has none yet)")  # fmt: skip
        if c.wd == "auto":
            if c.schedule != "one-cycle":
                raise ConfigError("wd", "auto", "a number unless --schedule one-cycle")
        elif c.wd is None or isinstance(c.wd, str) or not (0 <= c.wd < float("inf")):
            raise ConfigError("wd", c.wd, "a finite number >= 0, or 'auto'")
        if c.factory is not None and self.label_smoothing:
            raise ConfigError("label_smoothing", self.label_smoothing, "unset with --factory: "
                              "the factory's own loss function is trained")  # fmt: skip
        ls = c.label_smoothing
        if isinstance(ls, bool) or not isinstance(ls, (int, float)) or not 0 <= ls < 1:
            raise ConfigError("label_smoothing", ls, "a number in [0, 1)")
        for name in ("amp", "channels_last"):
            if not isinstance(getattr(c, name), bool):
                raise ConfigError(name, getattr(c, name), "True, False or None (the recipe's)")
        if c.train_samples is not None:
            c.train_samples = check_int("train_samples", c.train_samples)
        if c.clip is not None:
            c.clip = check_positive("clip", c.clip)
        c.seed = check_int("seed", c.seed, minimum=0, maximum=SEED_MAX)
        if c.checkpoint_every is not None:
            c.checkpoint_every = check_int("checkpoint_every", c.checkpoint_every)
        c.keep = check_int("keep", c.keep)
        if not isinstance(c.overwrite, bool):
            raise ConfigError("overwrite", c.overwrite, "True or False")
        if c.overwrite and (c.resume or c.resume_from):
            raise ConfigError("overwrite", True, "no --overwrite with --resume or --resume-from: "
                              "one continues the run, the other clears it")  # fmt: skip
        if c.extend and not (c.resume or c.resume_from):
            raise ConfigError("extend", True, "--resume or --resume-from with it: it lengthens "
                              "a saved run")  # fmt: skip
        if c.log not in (None, "csv", "tensorboard"):
            raise ConfigError("log", c.log, "'csv', 'tensorboard' or None")
        if c.log and not c.out:
            raise ConfigError("out", c.out, "a folder: --log writes to OUT/logs")
        if (c.resume or c.checkpoint_every) and not c.out:
            raise ConfigError("out", c.out, "a folder: checkpoints live in OUT/checkpoints")
        return c


def describe(c: FitConfig) -> str:
    """One line: what a resolved config trains, as ``onecycle fit`` prints it first.

    >>> print(describe(FitConfig(dataset="mnist1d", out=None).resolved()))  # doctest: +ELLIPSIS
    config: mnist1d, model cnn1d-bn, adamw, lr_max 0.01, batch 100, wd 0.01, 15 epochs, ...
    """
    data = c.factory if c.factory else c.dataset
    lr = c.lr_max if isinstance(c.lr_max, str) else f"{c.lr_max:g}"
    length = f"{c.epochs} epoch{'s' * (c.epochs != 1)}" if c.epochs is not None else "no epoch cap"
    if c.budget is not None:
        length += f", budget {c.budget:g}s"
    shape = {"one-cycle": f"div {c.div:g}, div_final {c.div_final:g}, pct_start "
                          f"{c.pct_start:g}, moms {'/'.join(f'{m:g}' for m in c.moms)}",
             "clr": f"{c.clr_mode}, div {c.div:g}"}.get(c.schedule)  # fmt: skip
    sched = f"{c.schedule} ({shape})" if shape else c.schedule
    wd = c.wd if isinstance(c.wd, str) else f"{c.wd:g}"
    extra = [f"accumulate {c.accumulate}"] if c.accumulate > 1 else []
    extra += [f"clip {c.clip:g}"] if c.clip else []
    extra += [f"crop pad {c.crop_pad}"] if c.crop_pad else []
    extra += ["flips"] if c.hflip else []
    extra += [f"test-time augmentation {c.tta}"] if c.tta else []
    data += " (best recipe)" if c.recipe == "best" and data else ""
    return ", ".join([f"config: {data}", f"model {c.model}", str(c.opt), f"lr_max {lr}",
                      f"batch {c.bs}", f"wd {wd}", length, sched, *extra,
                      f"amp {'on' if c.amp else 'off'}",
                      f"label smoothing {c.label_smoothing:g}", f"seed {c.seed}"])  # fmt: skip


def native_mixed_precision(device: str | None = None) -> bool:
    """Whether ``device`` (default: the CPU) runs mixed precision natively: CUDA (fp16), or
    a CPU with bf16 instructions (AVX512-BF16 or AMX) that oneDNN uses. Elsewhere bf16
    autocast is emulated and slower than fp32, so ``resolved()`` drops a recipe's ``amp``
    there (and logs it)."""
    import torch

    kind = torch.device(device).type if device else "cpu"
    if kind == "cuda":
        return True
    return kind == "cpu" and _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _check_budget(c: FitConfig) -> None:
    """A time budget in seconds, with what it can drive: a schedule of progress and a
    fixed ``lr_max`` and ``wd``."""
    c.budget = parse_budget(c.budget)  # type: ignore[arg-type]
    if c.schedule == "clr":
        raise ConfigError("budget", c.budget, "no --budget with --schedule clr: its cycles "
                          "are counted in optimizer steps (the other schedules run over "
                          "time)")  # fmt: skip
    for name in ("lr_max", "wd"):
        if getattr(c, name) == "auto":
            raise ConfigError(name, "auto", "a number with --budget: the range test and probes "
                              "are sized in the run's optimizer steps, which a budget learns "
                              "only as it runs (run onecycle lr-find first)")  # fmt: skip
    if c.extend:
        raise ConfigError("extend", True, "no --extend with --budget: a budgeted run cannot be "
                          "lengthened; --resume it with the same --budget")  # fmt: skip


def check_out(out: str | Path, name: str = "out") -> Path:
    """Make sure ``out`` is a folder this process can write (created if missing), before
    any training: a read-only or mistyped folder is refused now, not after the run."""
    path = Path(out)
    probe = path / f".onecycle-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            name, str(out), f"a folder this user can write ({e.strerror or e})"
        ) from None
    return path
