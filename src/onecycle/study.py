"""The super-convergence study: Smith's claims checked on your data (``onecycle study``).

One model, one data set, one epoch budget; the schedules of Smith's papers side by side:

- four fixed LRs placed from ``lr_max="auto"`` (range test + probes, ``onecycle.auto``)
  and the range test's curve, mirroring the seed's 0.01 / 0.1 / 0.7 / 0.99 (too small,
  good, near-optimal, too large): the auto ``lr_max`` / 100, / 10, itself, and the LR
  where the sweep blew up;
- step decay (x0.1 at 50% and 75%), exponential and time-based decay (to / 100), each
  starting from the auto LR;
- CLR ``triangular2`` between the range test's ``clr_bounds``, a whole number of cycles;
- 1cycle (fastai's form) peaking at the auto LR.

Test accuracy is measured several times per epoch. The headline is Smith's: iterations
to reach the best fixed LR's final accuracy, and the ratio (the speed-up). When 1cycle
does not get there sooner, the report says so. ``ablations=True`` adds Smith's 2018
recommendations: cyclical vs constant momentum, weight decay, two batch sizes, and the
linear "triangle" with constant momentum vs the cosine 1cycle.

>>> iters_to_reach([0, 100, 200, 300], [0.1, 0.5, 0.9, 0.95], 0.9)
200
>>> speedup(600, 200)
3.0
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from onecycle import distributed as D
from onecycle.callbacks import Callback, NonFiniteLossError
from onecycle.config import FitConfig, check_out
from onecycle.errors import ConfigError, check_int, check_positive
from onecycle.lock import FolderLock
from onecycle.run_build import build_learner, schedules_for
from onecycle.run_folder import _write_json
from onecycle.study_report import iters_to_reach, markdown, speedup, speedup_report, summarize

__all__ = [
    "StudyConfig",
    "iters_to_reach",
    "markdown",
    "place_lrs",
    "run_study",
    "speedup",
    "speedup_report",
    "summarize",
]

log = logging.getLogger(__name__)

# Per data set: epoch budget of a full study, accuracy thresholds for the table, and the
# model. The study measures Smith's claims on the classic setup of docs/superconvergence.md
# (fp32, plain cross-entropy, the models of his era's size), not `onecycle fit`'s fast
# recipe, whose bf16 and label smoothing would change what is compared.
DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"epochs": 4, "targets": (0.85, 0.90, 0.92), "model": "cnn"},
    "mnist1d": {"epochs": 30, "targets": (0.80, 0.90, 0.93), "model": "cnn1d"},
}
CLASSIC = {"amp": False, "channels_last": False, "label_smoothing": 0.0}
QUICK = {"epochs": 3, "evals_per_epoch": 2}


@dataclass
class StudyConfig:
    """What ``onecycle study`` runs. ``None`` fields take the data set's defaults."""

    dataset: str = "mnist1d"
    model: str | None = None
    opt: str | None = None
    bs: int | None = None
    wd: float | None = None
    epochs: int | None = None
    lr_max: float | None = None  # None: the range test's recommendation
    seeds: int = 1
    evals_per_epoch: int = 4
    targets: tuple[float, ...] | None = None
    ablations: bool = False
    quick: bool = False
    train_samples: int | None = None
    data_dir: str | None = None
    download: bool = False
    device: str | None = None
    out: str = "runs/study"

    def resolved(self) -> StudyConfig:
        if self.dataset not in DEFAULTS:
            raise ConfigError("dataset", self.dataset, f"one of {', '.join(DEFAULTS)}")
        c = dataclasses.replace(self)
        d = DEFAULTS[c.dataset]
        if c.quick:
            c.epochs = QUICK["epochs"] if c.epochs is None else c.epochs
            c.evals_per_epoch = min(c.evals_per_epoch, QUICK["evals_per_epoch"])
        c.epochs = check_int("epochs", d["epochs"] if c.epochs is None else c.epochs)
        c.seeds = check_int("seeds", c.seeds)
        c.evals_per_epoch = check_int("evals_per_epoch", c.evals_per_epoch)
        if c.lr_max is not None:
            c.lr_max = check_positive("lr_max", c.lr_max)
        c.targets = tuple(c.targets or d["targets"])
        for t in c.targets:
            if not 0 < t <= 1:
                raise ConfigError("targets", t, "accuracies in (0, 1]")
        return c

    def fit_config(self, **changes: Any) -> FitConfig:
        """The ``FitConfig`` of one run of this study (recipe filled in, validated)."""
        base = FitConfig(
            dataset=self.dataset, data_dir=self.data_dir, download=self.download,
            model=self.model or DEFAULTS[self.dataset]["model"], opt=self.opt, bs=self.bs,
            wd=self.wd, epochs=self.epochs or 1,
            train_samples=self.train_samples, device=self.device, out=None, progress=False,
            lr_max=1.0, **CLASSIC,
        )  # fmt: skip
        return dataclasses.replace(base, **changes).resolved()


# --- the plan: LRs placed from the range test ------------------------------------------------


def place_lrs(res: Any, near: float | None = None) -> dict[str, Any]:
    """The study's LRs from a range test: the four fixed LRs (the seed's too small, good,
    near-optimal, too large), the decay schedules' start, CLR's bounds and 1cycle's peak.

    ``near`` is the recommended ``lr_max`` (or the one given); ``too_large`` is the LR
    where the sweep's loss blew up (the end of the analysis window; the sweep's last LR
    when it never did), and at least 1.5x ``near`` (the seed's 0.99 is 1.4x its 0.7).
    """
    finite = [i for i, v in enumerate(res.analysis_curve) if v == v]
    blow_up = float(res.lrs[finite[-1]] if finite else res.lrs[-1])
    clr = res.suggestions.get("clr_bounds")
    bounds = clr.bounds if clr is not None else None
    if near is not None:
        lo = bounds[0] if bounds and bounds[0] < near else near / 25
        return _placed(near, blow_up, (float(lo), near))
    if res.recommended is None or res.recommended.lr is None:
        reasons = {s.reason for s in res.suggestions.values() if s.lr is None}
        raise ConfigError(
            "range test", res.stop_reason,
            f"a curve with a recommended lr_max to place the study's LRs "
            f"({'; '.join(sorted(reasons)) or 'none'})",
        )  # fmt: skip
    near = float(res.recommended.lr)
    lo, hi = bounds if bounds else (near / 10, near)
    return _placed(near, blow_up, (float(lo), float(hi)))


def _placed(near: float, blow_up: float, clr: tuple[float, float]) -> dict[str, Any]:
    return {
        "fixed": {
            "too small": near / 100, "good": near / 10, "near-optimal": near,
            "too large": max(blow_up, 1.5 * near),
        },
        "near": near, "clr": clr, "blow_up": blow_up,
    }  # fmt: skip


# --- measurement ---------------------------------------------------------------------------


class _Evaluator(Callback):
    """Test accuracy at fixed optimizer steps (and before the first), with the training
    seconds spent so far (evaluation time excluded) and the LR of every step."""

    order = 90

    def __init__(self, data: Any, points: Sequence[int]) -> None:
        self.data, self.points = data, set(points)
        self.iters: list[int] = []
        self.seconds: list[float] = []
        self.acc: list[float] = []
        self.loss: list[float] = []
        self.lrs: list[float] = []
        self.steps = 0
        self.spent = 0.0
        self.t0 = 0.0

    def before_fit(self, learn: Any) -> None:
        self.t0 = time.perf_counter()
        self.evaluate(learn)

    def after_step(self, learn: Any) -> None:
        self.steps += 1
        self.lrs.append(float(learn.step_values["lr"][-1]))
        if self.steps in self.points:
            self.evaluate(learn)

    def _score(self, learn: Any) -> tuple[float, float, float]:
        """(test accuracy, test loss, training seconds so far), evaluation time excluded."""
        t = time.perf_counter()
        was_training = learn.model.training
        res = learn.validate(self.data)  # the Learner's own validation (metrics: accuracy)
        learn.model.train(was_training)
        seconds = t - self.t0 - self.spent
        self.spent += time.perf_counter() - t
        return res["accuracy"], res["valid_loss"], seconds

    def _record(self, step: int, score: tuple[float, float, float]) -> None:
        self.iters.append(step)
        self.acc.append(score[0])
        self.loss.append(score[1])
        self.seconds.append(score[2])

    def evaluate(self, learn: Any) -> None:
        self._record(self.steps, self._score(learn))

    def fill_after_divergence(self, learn: Any) -> None:
        """Score the weights as training left them (chance or worse) at every remaining
        evaluation point, so that every run covers the budget's grid."""
        score = self._score(learn)
        last = self.iters[-1] if self.iters else -1
        for p in sorted(q for q in self.points if q > last):
            self._record(p, score)


def _eval_points(total: int, n: int) -> list[int]:
    return sorted({max(1, round(total * k / n)) for k in range(1, n + 1)})


def _train(cfg: FitConfig, evals_per_epoch: int) -> dict[str, Any]:
    """One run: ``cfg``'s schedule (as ``schedules_for`` makes it), evaluated on the test set."""
    learn, facts = build_learner(cfg)
    test, learn.valid_data = learn.valid_data, None  # evaluated by the _Evaluator only
    total = cfg.epochs * len(learn.train_data)  # type: ignore[arg-type]
    ev = _Evaluator(test, _eval_points(total, cfg.epochs * evals_per_epoch))
    diverged_at = None
    if cfg.schedule == "clr" and cfg.step_size is None:
        cfg = dataclasses.replace(cfg, step_size=_clr_step(total, cfg.epochs))
    try:
        learn.fit(
            cfg.epochs, float(cfg.lr_max),  # type: ignore[arg-type]
            schedules=lambda n: schedules_for(cfg, n), cbs=[ev],
        )  # fmt: skip
    except NonFiniteLossError as e:  # the too-large LR's fate, recorded, not raised
        diverged_at = ev.steps
        log.info("run diverged: %s", e)
        ev.fill_after_divergence(learn)
    return {
        "iters": ev.iters, "seconds": ev.seconds, "acc": ev.acc, "loss": ev.loss,
        "lrs": ev.lrs, "diverged_at": diverged_at, "total_steps": total, "facts": facts,
    }  # fmt: skip


def _clr_step(total: int, epochs: int) -> int:
    """Half a CLR cycle: ~2 epochs (Smith: 2-10), rounded so the budget holds whole cycles."""
    cycles = max(1, round(epochs / 4))
    return max(1, total // (2 * cycles))


def _plan(lrs: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, family, FitConfig changes) for every schedule of the main comparison."""
    near = lrs["near"]
    plan = [(f"fixed {k} ({v:.3g})", "fixed", {"schedule": "const", "lr_max": v})
            for k, v in lrs["fixed"].items()]  # fmt: skip
    plan += [
        ("step decay", "decay", {"schedule": "step", "lr_max": near}),
        ("exp decay", "decay", {"schedule": "exp", "lr_max": near, "div_final": 100.0}),
        ("time decay", "decay", {"schedule": "time", "lr_max": near, "div_final": 100.0}),
        ("CLR triangular2", "clr", {
            "schedule": "clr", "clr_mode": "triangular2", "lr_max": lrs["clr"][1],
            "div": lrs["clr"][1] / lrs["clr"][0],
        }),
        ("1cycle", "1cycle", {"schedule": "one-cycle", "lr_max": near}),
    ]  # fmt: skip
    return plan


def _ablation_plan(base: FitConfig, near: float, bs2_lr: float) -> list[tuple[str, str, dict]]:
    plan: list[tuple[str, str, dict]] = [
        ("momentum", "constant 0.9", {"moms": (0.9, 0.9, 0.9)}),
    ]
    for wd in (1e-3, 1e-4, 1e-5, 0.0):
        if wd != base.wd:
            plan.append(("weight decay", f"{wd:g}", {"wd": wd}))
    plan.append(("batch size", f"{2 * int(base.bs or 1)} (lr_max {bs2_lr:.3g} from its own "
                 "range test)", {"bs": 2 * int(base.bs or 1), "lr_max": bs2_lr}))  # fmt: skip
    plan.append(("shape", "linear triangle, constant momentum 0.9",
                 {"anneal": "linear", "moms": (0.9, 0.9, 0.9)}))  # fmt: skip
    for _, _, ch in plan:
        ch.setdefault("lr_max", near)
        ch["schedule"] = "one-cycle"
    return plan


def _range_test(cfg: StudyConfig, **changes: Any) -> tuple[Any, float | None]:
    """The range test's curve and ``lr_max="auto"``'s pick (the search, budgeted against
    one run of the study); refused when every candidate diverged."""
    from onecycle.auto import auto_lr_max

    learn, _ = build_learner(cfg.fit_config(seed=0, **changes))
    auto = auto_lr_max(learn, int(cfg.epochs or 1) * learn.steps_per_epoch())
    if auto.lr_max is None:
        raise ConfigError("range test", "auto", f"a usable lr_max ({auto.reason})")
    # a short study's search may have had no room for a sweep: the figure still gets one
    return auto.range_test or learn.lr_find(), auto.lr_max


@dataclass
class StudyResult:
    """What ``run_study`` wrote: the JSON content and the files."""

    data: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


def run_study(cfg: StudyConfig, *, stream: TextIO | None = None) -> StudyResult:
    """Run the study ``cfg`` describes; write ``study.json``, ``study.md`` and PNGs to
    ``cfg.out``. ``stream`` (if given) receives one line per finished run."""
    if D.is_distributed():
        raise ConfigError("study", f"{D.world_size()} processes",
                          "one process (run `onecycle study` without torchrun)")  # fmt: skip
    cfg = cfg.resolved()
    t_start = time.perf_counter()
    out = check_out(cfg.out)  # a read-only folder is refused before an hour of training
    with FolderLock(out):  # and one another process is writing (onecycle.lock)
        return _run_study(cfg, out, t_start, stream)


def _run_study(cfg: StudyConfig, out: Path, t_start: float, stream: TextIO | None) -> StudyResult:
    assert cfg.targets is not None and cfg.epochs is not None

    def say(text: str) -> None:
        if stream is not None:
            stream.write(text + "\n")
            stream.flush()

    res, pick = _range_test(cfg)
    lrs = place_lrs(res, cfg.lr_max if cfg.lr_max is not None else pick)
    say(f"range test: lr_max {lrs['near']:.3g}, blow-up {lrs['blow_up']:.3g}, "
        f"CLR bounds {lrs['clr'][0]:.3g}..{lrs['clr'][1]:.3g}")  # fmt: skip
    plan = _plan(lrs)
    runs: dict[str, list[dict[str, Any]]] = {}
    family = {name: fam for name, fam, _ in plan}
    base_cfg = cfg.fit_config()
    for name, _, changes in plan:
        for seed in range(cfg.seeds):
            r = _train(cfg.fit_config(seed=seed, **changes), cfg.evals_per_epoch)
            runs.setdefault(name, []).append(r)
            say(f"{name:<28} seed {seed}: final {r['acc'][-1]:.4f}, best {max(r['acc']):.4f}"
                + (f", diverged at step {r['diverged_at']}" if r["diverged_at"] is not None
                   else ""))  # fmt: skip
    summaries = {name: summarize(rs, cfg.targets) for name, rs in runs.items()}
    fixed = [n for n in summaries if family[n] == "fixed"]
    report = speedup_report(summaries, fixed, ["1cycle", "CLR triangular2"])
    for line in report["text"]:
        say(line)

    ablations: list[dict[str, Any]] = []
    if cfg.ablations:
        bs2 = 2 * int(base_cfg.bs or 1)
        _, bs2_lr = _range_test(cfg, bs=bs2)
        base = summaries["1cycle"]
        reference = [
            ("momentum", "cyclical 0.95-0.85-0.95"),
            ("weight decay", f"{base_cfg.wd:g} (the study's)"),
            ("batch size", f"{base_cfg.bs} (lr_max {lrs['near']:.3g})"),
            ("shape", "cosine 1cycle, momentum 0.95-0.85-0.95 (fastai)"),
        ]  # fmt: skip
        for factor, setting in reference:
            ablations.append({"factor": factor, "setting": setting, "summary": base,
                              "reference": True})  # fmt: skip
        for factor, setting, changes in _ablation_plan(base_cfg, lrs["near"], bs2_lr):
            rs = [_train(cfg.fit_config(seed=s, **changes), cfg.evals_per_epoch)
                  for s in range(cfg.seeds)]  # fmt: skip
            summ = summarize(rs, cfg.targets)
            ablations.append({"factor": factor, "setting": setting, "summary": summ,
                              "reference": False, "lr_max": changes["lr_max"]})  # fmt: skip
            say(f"ablation {factor}: {setting}: final {summ['final']['mean']:.4f}")
        ablations.sort(key=lambda a: [r[0] for r in reference].index(a["factor"]))

    data: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "recipe": {k: v for k, v in dataclasses.asdict(base_cfg).items() if k != "extra"},
        "facts": runs["1cycle"][0]["facts"],
        "lrs": lrs,
        "range_test": res.to_dict(),
        "schedules": {
            name: {
                "family": family[name],
                "summary": summaries[name],
                "runs": [{k: v for k, v in r.items() if k not in ("lrs", "facts")} for r in rs],
                "lr_trace": _thin(rs[0]["lrs"], 600),
            }
            for name, rs in runs.items()
        },
        "speedup": report,
        "ablations": ablations,
        "wall_seconds": time.perf_counter() - t_start,
        "machine": _machine(),
    }
    files = {"json": str(out / "study.json"), "table": str(out / "study.md")}
    _write_json(out / "study.json", data)
    (out / "study.md").write_text(markdown(data))
    try:
        from onecycle import plots

        plots.plot_study_accuracy(data, out / "accuracy.png")
        files["accuracy_plot"] = str(out / "accuracy.png")
        plots.plot_study_lrs(data, out / "lrs.png")
        files["lr_plot"] = str(out / "lrs.png")
        marks = {k: v for k, v in lrs["fixed"].items()}
        marks["CLR low"], marks["CLR high"] = lrs["clr"]
        res.plot(out / "range_test.png", marks=marks)
        files["range_test_plot"] = str(out / "range_test.png")
    except ImportError as e:
        log.warning("no plots: %s", e)
    return StudyResult(data, files)


def _thin(values: Sequence[float], n: int) -> list[list[float]]:
    """At most ``n`` (step, value) pairs of a per-step trace, ends kept."""
    if not values:
        return []
    stride = max(1, math.ceil(len(values) / n))
    idx = list(range(0, len(values), stride))
    if idx[-1] != len(values) - 1:
        idx.append(len(values) - 1)
    return [[i, values[i]] for i in idx]


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }  # fmt: skip
