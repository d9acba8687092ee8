"""Figures. matplotlib is imported inside each function (``pip install onecycle[plot]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onecycle.errors import ConfigError, check_int
from onecycle.schedules import Schedule, sample

__all__ = [
    "plot_losses",
    "plot_range_test",
    "plot_recorded",
    "plot_schedule",
    "plot_study_accuracy",
    "plot_study_lrs",
]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'onecycle[plot]'") from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_schedule(
    schedules: Mapping[str, Schedule | Sequence[Schedule]],
    total_steps: int,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Preview schedules without training: one panel per hyper-parameter, values over steps.

    ``schedules`` is what you would give ``Scheduler`` (a schedule or a list per
    param group for each key). Writes a PNG to ``path`` and returns it.

    >>> import tempfile, pathlib
    >>> from onecycle.schedules import one_cycle, one_cycle_moms
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "sched.png"
    >>> plot_schedule({"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, 1000, out).exists()
    True
    """
    n = check_int("total_steps", total_steps)
    if not isinstance(schedules, Mapping) or not schedules:
        raise ConfigError("schedules", schedules, "a non-empty mapping {hyper: schedule}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(schedules), figsize=(4.5 * len(schedules), 3.2), squeeze=False)
    steps = list(range(n))
    for ax, (key, spec) in zip(axes[0], schedules.items()):
        per_group = list(spec) if isinstance(spec, Sequence) else [spec]
        for i, sched in enumerate(per_group):
            label = f"group {i}" if len(per_group) > 1 else None
            ax.plot(steps, sample(sched, n), label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(per_group) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_losses(recorder: Any, path: str | Path, *, skip_start: int = 5) -> Path:
    """Training loss per batch (raw and smoothed) and validation loss per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    losses, smooth = recorder.losses, recorder.smooth_losses
    xs = list(range(len(losses)))[skip_start:]
    ax.plot(xs, losses[skip_start:], alpha=0.3, label="train (per batch)")
    ax.plot(xs, smooth[skip_start:], label="train (smoothed)")
    rows = [r for r in recorder.rows if "valid_loss" in r]
    if rows and losses:
        per_epoch = len(losses) / max(1, len(recorder.rows))
        ax.plot(
            [(i + 1) * per_epoch for i in range(len(rows))],
            [r["valid_loss"] for r in rows],
            "o-",
            label="valid (per epoch)",
        )
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_recorded(hypers: Mapping[str, Sequence[Sequence[float]]], path: str | Path) -> Path:
    """What a Recorder saw: each hyper-parameter per optimizer step, one line per group."""
    if not hypers:
        raise ConfigError("hypers", "nothing recorded", "a Recorder of a finished fit")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(hypers), figsize=(4.5 * len(hypers), 3.2), squeeze=False)
    for ax, (key, per_step) in zip(axes[0], hypers.items()):
        n_groups = len(per_step[0]) if per_step else 0
        for g in range(n_groups):
            ax.plot([v[g] for v in per_step], label=f"group {g}" if n_groups > 1 else None)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if n_groups > 1:
            ax.legend()
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_range_test(
    result: Any, path: str | Path, *, marks: Mapping[str, float] | None = None
) -> Path:
    """Loss against LR from a range test, smoothed and raw, with the suggestions marked;
    ``marks`` adds labelled vertical lines (e.g. the LRs a study chose from the curve)."""
    plt = _pyplot()
    panels = 2 if result.valid_metrics or result.valid_losses else 1
    wide = 2.5 if marks else 0
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels + wide, 3.8), squeeze=False)
    ax = axes[0][0]
    lrs = result.lrs[: len(result.smoothed)]
    ax.plot(lrs, result.losses[: len(lrs)], alpha=0.25, label="loss")
    ax.plot(lrs, result.smoothed, alpha=0.5, lw=1, label="EMA (stop rule)")
    ax.plot(result.lrs, result.analysis_curve, lw=2, label="zero-lag (suggestions)")
    if result.mode == "exp":
        ax.set_xscale("log")
    markers = {"valley": "o", "steep": "v", "minimum": "s", "clr_bounds": "D"}
    for name, sug in result.suggestions.items():
        if sug.lr is None or sug.index is None:
            continue
        near = min(range(len(result.lrs)), key=lambda i: abs(result.lrs[i] - sug.lr))
        y = result.analysis_curve[near]
        y = result.losses[near] if y != y else y
        ax.plot([sug.lr], [y], markers.get(name, "x"), ms=8, label=f"{name} {sug.lr:.2g}")
        if sug.bounds:
            for b in sug.bounds:
                ax.axvline(b, ls=":", color="gray")
    if result.recommended is not None:
        ax.axvline(
            result.recommended.lr, color="red", ls="--", label=f"lr_max {result.recommended.lr:.2g}"
        )
    for i, (name, lr) in enumerate((marks or {}).items()):
        ax.axvline(lr, color=f"C{(i + 4) % 10}", lw=1, alpha=0.8, label=f"{name} {lr:.2g}")
    finite = [v for v in result.analysis_curve if v == v] or [v for v in result.smoothed if v == v]
    if finite:  # keep the divergence from squashing the useful part
        lo, hi = min(finite), max(finite)
        pad = max(abs(hi - lo), 1e-3 * abs(hi))
        ax.set_ylim(lo - 0.3 * pad, hi + 0.5 * pad)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(result.stop_reason, fontsize=9)
    ax.grid(alpha=0.3)
    if marks:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    if panels == 2:
        ax2 = axes[0][1]
        n = len(result.valid_metrics or result.valid_losses)
        ax2.plot(lrs[:n], result.valid_metrics or result.valid_losses)
        if result.mode == "exp":
            ax2.set_xscale("log")
        ax2.set_xlabel("learning rate")
        ax2.set_ylabel("validation metric" if result.valid_metrics else "validation loss")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_study_accuracy(data: Mapping[str, Any], path: str | Path) -> Path:
    """A study's test accuracy against iterations, every schedule on one figure (mean over
    seeds, min-max band when there are several): the whole range on the left, the top
    on the right."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"fixed": ":", "decay": "--", "clr": "-.", "1cycle": "-"}
    target = data["speedup"]["target"]
    best = max(max(sch["summary"]["mean_acc"]) for sch in data["schedules"].values())
    for ax in axes:
        for i, (name, sch) in enumerate(data["schedules"].items()):
            s = sch["summary"]
            color = "black" if sch["family"] == "1cycle" else f"C{i % 10}"
            ax.plot(s["iters"], s["mean_acc"], styles.get(sch["family"], "-"), color=color,
                    lw=2.2 if sch["family"] == "1cycle" else 1.4, label=name)  # fmt: skip
            runs = sch["runs"]
            if len(runs) > 1:
                lo = [min(r["acc"][k] for r in runs) for k in range(len(s["iters"]))]
                hi = [max(r["acc"][k] for r in runs) for k in range(len(s["iters"]))]
                ax.fill_between(s["iters"], lo, hi, color=color, alpha=0.12)
        ax.axhline(target, color="gray", lw=0.8, ls="--", label=f"best fixed final {target:.2%}")
        ax.set_xlabel("iteration (optimizer step)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0.0, 1.0)
    axes[0].set_title(f"{data['facts'].get('dataset', '')}: test accuracy by schedule", fontsize=10)
    axes[1].set_ylim(max(0.0, min(target, best) - 0.06), min(1.0, best + 0.01))
    axes[1].set_title("zoom on the top", fontsize=10)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_study_lrs(data: Mapping[str, Any], path: str | Path) -> Path:
    """The LR every schedule of a study used at every step (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, sch) in enumerate(data["schedules"].items()):
        trace = sch["lr_trace"]
        if trace:
            ax.plot([p[0] for p in trace], [p[1] for p in trace], color=f"C{i % 10}",
                    lw=2 if sch["family"] == "1cycle" else 1.2, label=name)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("iteration (optimizer step)")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, plt, path)
