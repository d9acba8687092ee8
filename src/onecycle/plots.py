"""Figures. matplotlib is imported inside each function (``pip install onecycle[plot]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onecycle.errors import ConfigError, check_int
from onecycle.schedules import Schedule, sample

__all__ = ["plot_schedule"]


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
