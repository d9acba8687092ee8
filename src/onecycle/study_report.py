"""The study's analysis and report: pure functions of the measured accuracy curves.

``onecycle.study`` trains the schedules and records test accuracy against iterations;
this module reads those records: iterations to reach a target (``iters_to_reach``), the
mean curve over seeds (``summarize``), Smith's speed-up measure against the best fixed LR
(``speedup_report``) and the Markdown report (``markdown``). No torch, no training.

>>> iters_to_reach([0, 100, 200, 300], [0.1, 0.5, 0.9, 0.95], 0.9)
200
>>> speedup(600, 200)
3.0
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["iters_to_reach", "markdown", "speedup", "speedup_report", "summarize"]


def iters_to_reach(iters: Sequence[int], accs: Sequence[float], target: float) -> int | None:
    """The first evaluated iteration whose accuracy is at least ``target`` (None: never)."""
    for it, acc in zip(iters, accs):
        if acc == acc and acc >= target - 1e-12:
            return int(it)
    return None


def speedup(reference_iters: int | None, iters: int | None) -> float | None:
    """How many times fewer iterations than the reference (None when either never got there)."""
    if reference_iters is None or iters is None:
        return None
    return reference_iters / max(iters, 1)


def summarize(runs: Sequence[dict[str, Any]], targets: Sequence[float]) -> dict[str, Any]:
    """Mean curve and statistics over the seeds of one schedule.

    Each run holds ``iters``, ``seconds`` and ``acc`` on the same evaluation grid.
    """
    iters = runs[0]["iters"]
    for r in runs:
        if r["iters"] != iters:
            raise ValueError("runs of one schedule must share their evaluation iterations")
    n = len(runs)
    mean = [sum(r["acc"][i] for r in runs) / n for i in range(len(iters))]
    secs = [sum(r["seconds"][i] for r in runs) / n for i in range(len(iters))]
    finals = [r["acc"][-1] for r in runs]
    bests = [max(r["acc"]) for r in runs]

    def stats(xs: list[float]) -> dict[str, float]:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return {"mean": sum(xs) / len(xs), "sd": sd, "min": min(xs), "max": max(xs)}

    to = {}
    for t in targets:
        k = iters_to_reach(iters, mean, t)
        to[f"{t:g}"] = {
            "iters": k, "seconds": None if k is None else secs[iters.index(k)],
        }  # fmt: skip
    return {
        "iters": iters, "mean_acc": mean, "mean_seconds": secs, "final": stats(finals),
        "best": stats(bests), "to_target": to,
        "diverged": sum(1 for r in runs if r.get("diverged_at") is not None),
    }  # fmt: skip


def speedup_report(
    summaries: dict[str, dict[str, Any]], fixed: Sequence[str], contenders: Sequence[str]
) -> dict[str, Any]:
    """Smith's measure: iterations each contender needs to reach the best fixed LR's final
    (mean) accuracy, against the iterations that fixed LR needed, and the sentence to print.

    >>> s = {"fixed": {"iters": [0, 10, 20], "mean_acc": [0.1, 0.8, 0.9],
    ...                "final": {"mean": 0.9}},
    ...      "1cycle": {"iters": [0, 10, 20], "mean_acc": [0.1, 0.95, 0.96],
    ...                 "final": {"mean": 0.96}}}
    >>> speedup_report(s, ["fixed"], ["1cycle"])["contenders"]["1cycle"]["speedup"]
    2.0
    """
    best = max(fixed, key=lambda k: summaries[k]["final"]["mean"])
    ref = summaries[best]
    target = ref["final"]["mean"]
    ref_iters = iters_to_reach(ref["iters"], ref["mean_acc"], target)
    out: dict[str, Any] = {
        "best_fixed": best, "target": target, "best_fixed_iters": ref_iters, "contenders": {},
    }  # fmt: skip
    lines = [
        f"Best fixed LR: {best}, final test accuracy {target:.2%} (mean over seeds), "
        f"first reached at iteration {ref_iters}."
    ]
    for name in contenders:
        s = summaries[name]
        k = iters_to_reach(s["iters"], s["mean_acc"], target)
        ratio = speedup(ref_iters, k)
        if ratio is None:
            verdict = (f"{name} never reaches {target:.2%} within the budget (final "
                       f"{s['final']['mean']:.2%}): {name} is NOT faster than the best fixed "
                       "LR here.")  # fmt: skip
        elif ratio > 1:
            verdict = (f"{name} reaches {target:.2%} at iteration {k}: {ratio:.2f}x fewer "
                       f"iterations than the best fixed LR.")  # fmt: skip
        else:
            verdict = (f"{name} reaches {target:.2%} at iteration {k} ({ratio:.2f}x): {name} is "
                       f"NOT faster than the best fixed LR here.")  # fmt: skip
        out["contenders"][name] = {"iters": k, "speedup": ratio, "verdict": verdict}
        lines.append(verdict)
    out["text"] = lines
    return out


def _pct(s: dict[str, float], seeds: int) -> str:
    if seeds > 1:
        return f"{s['mean']:.2%} ± {s['sd']:.2%}"
    return f"{s['mean']:.2%}"


def markdown(data: dict[str, Any]) -> str:
    """The study's Markdown report: schedules table, speed-ups, ablations."""
    cfg = data["config"]
    seeds = cfg["seeds"]
    facts = data["facts"]
    rec = data["recipe"]
    first = next(iter(data["schedules"].values()))
    targets = list(first["summary"]["to_target"])
    lines = [
        f"# Super-convergence study: {facts.get('dataset', cfg['dataset'])}",
        "",
        f"Model `{rec['model']}` ({facts.get('params', '?'):,} parameters), optimizer "
        f"`{rec['opt']}`, batch size {rec['bs']}, weight decay {rec['wd']:g}, "
        f"{cfg['epochs']} epochs ({first['runs'][0]['total_steps']} iterations), "
        f"{facts.get('train_samples', '?'):,} training / "
        f"{facts.get('test_samples', '?'):,} test samples, {seeds} seed(s), test accuracy "
        f"{cfg['evals_per_epoch']}x per epoch. Seconds are training time only (evaluations "
        f"excluded), {data['machine']['torch_threads']} torch thread(s) on "
        f"{data['machine']['cpus']} CPUs; study wall time {data['wall_seconds']:.0f} s.",
        "",
        ('lr_max="auto" (range test + probes)' if cfg["lr_max"] is None else "Given")
        + f": near-optimal lr_max {data['lrs']['near']:.3g}; range test: loss blew up at "
        f"{data['lrs']['blow_up']:.3g}, CLR bounds {data['lrs']['clr'][0]:.3g} .. "
        f"{data['lrs']['clr'][1]:.3g}.",
        "",
        "| schedule | final acc | best acc | "
        + " | ".join(f"iters to {float(t):.0%} | s to {float(t):.0%}" for t in targets)
        + " |",
        "|---|---|---|" + "---|---|" * len(targets),
    ]
    for name, sch in data["schedules"].items():
        s = sch["summary"]
        cells = []
        for t in targets:
            hit = s["to_target"][t]
            cells += ["—", "—"] if hit["iters"] is None else [
                str(hit["iters"]), f"{hit['seconds']:.1f}"
            ]  # fmt: skip
        div = f" (diverged {s['diverged']}/{seeds})" if s["diverged"] else ""
        lines.append(
            f"| {name}{div} | {_pct(s['final'], seeds)} | {_pct(s['best'], seeds)} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "## Speed-up over the best fixed LR (Smith's measure)", ""]
    lines += [f"- {t}" for t in data["speedup"]["text"]]
    if data["ablations"]:
        lines += [
            "", "## Ablations (1cycle, Smith 2018's recommendations)", "",
            "| factor | setting | final acc | best acc |", "|---|---|---|---|",
        ]  # fmt: skip
        for a in data["ablations"]:
            s = a["summary"]
            lines.append(f"| {a['factor']} | {a['setting']} | {_pct(s['final'], seeds)} | "
                         f"{_pct(s['best'], seeds)} |")  # fmt: skip
    lines.append("")
    return "\n".join(lines)
