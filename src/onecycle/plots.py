"""Figures. matplotlib is imported inside each function (``pip install onecycle[plot]``).

Every plot draws into ``ax`` when given (your own Axes: a single one, or a sequence of
one per panel), otherwise into a new figure that pyplot never sees; returns the
``matplotlib.figure.Figure``; and writes a file only when given ``path``. The matplotlib
backend is never changed: a new figure is a ``onecycle.figure.Figure``, which shows
inline when it is a notebook cell's value and leaves ``plt.show()`` to your own figures.

>>> import tempfile, pathlib
>>> from onecycle.schedules import one_cycle, one_cycle_moms
>>> fig = plot_schedule({"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, 1000)
>>> [ax.get_ylabel() for ax in fig.axes]
['lr', 'momentum']
>>> out = pathlib.Path(tempfile.mkdtemp()) / "sched.png"
>>> _ = plot_schedule({"lr": one_cycle(0.1)}, 1000, out)
>>> out.read_bytes()[:4]
b'\\x89PNG'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecycle.errors import ConfigError, check_int
from onecycle.schedules import Schedule, sample

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_losses",
    "plot_range_test",
    "plot_recorded",
    "plot_schedule",
    "plot_study_accuracy",
    "plot_study_lrs",
]


def _axes(ax: Any, n: int, figsize: tuple[float, float], what: str) -> tuple[Figure, list[Axes]]:
    """``n`` Axes to draw into, and their figure: the user's ``ax`` (one Axes, or a
    sequence of ``n``), or a new figure of ``n`` panels side by side."""
    try:
        from onecycle.figure import new_figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'onecycle[plot]'") from e
    if ax is None:
        fig = new_figure(figsize=figsize)
        return fig, list(fig.subplots(1, n, squeeze=False)[0])
    axes = [ax] if hasattr(ax, "plot") else _flat(ax)
    if len(axes) != n or not all(hasattr(a, "plot") and hasattr(a, "figure") for a in axes):
        got = "one Axes" if hasattr(ax, "plot") else f"{len(axes)} item(s)"
        raise ConfigError("ax", got, f"{'an Axes' if n == 1 else f'a sequence of {n} Axes'}, "
                          f"one per panel ({what}), or None for a new figure")  # fmt: skip
    return _root(axes[0]), axes


def _flat(ax: Any) -> list[Any]:
    try:
        import numpy as np

        return list(np.asarray(ax, dtype=object).ravel())
    except (TypeError, ValueError):
        return [ax]


def _root(ax: Any) -> Figure:
    """The top-level figure an Axes belongs to (through subfigures)."""
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's parent chain
        fig = fig.figure
    return fig


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    """Write ``fig`` to ``path`` (PNG unless the suffix says otherwise) if given."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def plot_schedule(
    schedules: Mapping[str, Schedule | Sequence[Schedule]],
    total_steps: int,
    path: str | Path | None = None,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """Preview schedules without training: one panel per hyper-parameter, values over steps.

    ``schedules`` is what you would give ``Scheduler`` (a schedule or a list per
    param group for each key). ``ax``: one Axes per key. Returns the figure; writes it to
    ``path`` if given (see the module's example).
    """
    n = check_int("total_steps", total_steps)
    if not isinstance(schedules, Mapping) or not schedules:
        raise ConfigError("schedules", schedules, "a non-empty mapping {hyper: schedule}")
    fig, axes = _axes(ax, len(schedules), (4.5 * len(schedules), 3.2), ", ".join(schedules))
    steps = list(range(n))
    for a, (key, spec) in zip(axes, schedules.items()):
        per_group = list(spec) if isinstance(spec, Sequence) else [spec]
        for i, sched in enumerate(per_group):
            label = f"group {i}" if len(per_group) > 1 else None
            a.plot(steps, sample(sched, n), label=label)
        a.set_xlabel("optimizer step")
        a.set_ylabel(key)
        a.grid(alpha=0.3)
        if len(per_group) > 1:
            a.legend()
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_losses(
    recorder: Any,
    path: str | Path | None = None,
    *,
    skip_start: int = 5,
    ax: Axes | None = None,
) -> Figure:
    """Training loss per batch (raw and smoothed) and validation loss per epoch."""
    fig, (a,) = _axes(ax, 1, (6, 3.6), "loss")
    losses, smooth = recorder.losses, recorder.smooth_losses
    xs = list(range(len(losses)))[skip_start:]
    a.plot(xs, losses[skip_start:], alpha=0.3, label="train (per batch)")
    a.plot(xs, smooth[skip_start:], label="train (smoothed)")
    rows = [r for r in recorder.rows if "valid_loss" in r]
    if rows and losses:
        per_epoch = len(losses) / max(1, len(recorder.rows))
        a.plot(
            [(i + 1) * per_epoch for i in range(len(rows))],
            [r["valid_loss"] for r in rows],
            "o-",
            label="valid (per epoch)",
        )
    a.set_xlabel("batch")
    a.set_ylabel("loss")
    a.grid(alpha=0.3)
    a.legend()
    return _finish(fig, path)


def plot_recorded(
    hypers: Mapping[str, Sequence[Sequence[float]]],
    path: str | Path | None = None,
    *,
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """What a Recorder saw: each hyper-parameter per optimizer step, one line per group."""
    if not hypers:
        raise ConfigError("hypers", "nothing recorded", "a Recorder of a finished fit")
    fig, axes = _axes(ax, len(hypers), (4.5 * len(hypers), 3.2), ", ".join(hypers))
    for a, (key, per_step) in zip(axes, hypers.items()):
        n_groups = len(per_step[0]) if per_step else 0
        for g in range(n_groups):
            a.plot([v[g] for v in per_step], label=f"group {g}" if n_groups > 1 else None)
        a.set_xlabel("optimizer step")
        a.set_ylabel(key)
        a.grid(alpha=0.3)
        if n_groups > 1:
            a.legend()
    return _finish(fig, path)


def plot_range_test(
    result: Any,
    path: str | Path | None = None,
    *,
    marks: Mapping[str, float] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Loss against LR from a range test, smoothed and raw, with the suggestions marked;
    ``marks`` adds labelled vertical lines (e.g. the LRs a study chose from the curve).

    A second panel shows the validation curve when the test recorded one; ``ax``: one
    Axes (the loss panel only) or one per panel."""
    valid = result.valid_metrics or result.valid_losses
    panels = 2 if valid and (ax is None or not hasattr(ax, "plot")) else 1
    wide = 2.5 if marks else 0
    fig, axes = _axes(ax, panels, (6 * panels + wide, 3.8), "loss, validation")
    a = axes[0]
    lrs = result.lrs[: len(result.smoothed)]
    a.plot(lrs, result.losses[: len(lrs)], alpha=0.25, label="loss")
    a.plot(lrs, result.smoothed, alpha=0.5, lw=1, label="EMA (stop rule)")
    a.plot(result.lrs, result.analysis_curve, lw=2, label="zero-lag (suggestions)")
    if result.mode == "exp":
        a.set_xscale("log")
    markers = {"valley": "o", "steep": "v", "minimum": "s", "clr_bounds": "D"}
    for name, sug in result.suggestions.items():
        if sug.lr is None or sug.index is None:
            continue
        near = min(range(len(result.lrs)), key=lambda i: abs(result.lrs[i] - sug.lr))
        y = result.analysis_curve[near] if near < len(result.analysis_curve) else float("nan")
        y = result.losses[near] if y != y else y
        a.plot([sug.lr], [y], markers.get(name, "x"), ms=8, label=f"{name} {sug.lr:.2g}")
        if sug.bounds:
            for b in sug.bounds:
                a.axvline(b, ls=":", color="gray")
    if result.recommended is not None and result.recommended.lr is not None:
        a.axvline(result.recommended.lr, color="red", ls="--",
                  label=f"lr_max {result.recommended.lr:.2g}")  # fmt: skip
    for i, (name, lr) in enumerate((marks or {}).items()):
        a.axvline(lr, color=f"C{(i + 4) % 10}", lw=1, alpha=0.8, label=f"{name} {lr:.2g}")
    finite = [v for v in result.analysis_curve if v == v] or [v for v in result.smoothed if v == v]
    if finite:  # keep the divergence from squashing the useful part
        lo, hi = min(finite), max(finite)
        pad = max(abs(hi - lo), 1e-3 * abs(hi))
        a.set_ylim(lo - 0.3 * pad, hi + 0.5 * pad)
    a.set_xlabel("learning rate")
    a.set_ylabel("training loss")
    a.set_title(result.stop_reason, fontsize=9)
    a.grid(alpha=0.3)
    if marks:
        a.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        a.legend(fontsize=8)
    if panels == 2:
        a2 = axes[1]
        a2.plot(lrs[: len(valid)], valid)
        if result.mode == "exp":
            a2.set_xscale("log")
        a2.set_xlabel("learning rate")
        a2.set_ylabel("validation metric" if result.valid_metrics else "validation loss")
        a2.grid(alpha=0.3)
    return _finish(fig, path)


def plot_study_accuracy(
    data: Mapping[str, Any],
    path: str | Path | None = None,
    *,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """A study's test accuracy against iterations, every schedule on one figure (mean over
    seeds, min-max band when there are several): the whole range on the left, the top
    on the right."""
    fig, axes = _axes(ax, 2, (13, 5), "all, top")
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
    return _finish(fig, path)


def plot_study_lrs(
    data: Mapping[str, Any], path: str | Path | None = None, *, ax: Axes | None = None
) -> Figure:
    """The LR every schedule of a study used at every step (log scale)."""
    fig, (ax,) = _axes(ax, 1, (8, 4), "lr")
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
    return _finish(fig, path)
