"""Figures. matplotlib is imported inside each function (``pip install onecycle[plot]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onecycle.errors import ConfigError, check_int
from onecycle.schedules import Schedule, sample

__all__ = ["plot_losses", "plot_recorded", "plot_schedule"]


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
