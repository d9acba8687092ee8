"""From the suite's runs to its numbers: summaries, merges, tables and the budget plot.

Nothing here trains; ``suite.py`` (the one entry point) calls it:

- ``summarise`` and ``table``: per pair, each arm's mean, spread of picks and compute
  ratio, and its gap to the grid's best; the table ``suite.py run`` and ``merge`` write;
- ``merge``: several suite JSONs into one (``suite.py merge``);
- ``counts``, ``counts_table`` and ``plot``: the v6 report (``suite.py report``): every
  pair x the auto arms at three budgets and the learning-rate-free arms, the counts per
  group and the budget curve (pairs within target against compute);
- ``yardstick_rows`` and ``yardstick_table``: the grid's best LR re-run at fresh seeds
  against auto at the same seeds (``suite.py yardstick``).

"Within target" is the suite's (``Task.within_target``: 0.5 points, or 2% of bits/char or
MSE, of the grid's best mean); a failed run (refused or non-finite) is a miss. Spread:
max/min of the picks over the seeds run. "Ties or beats schedule-free AdamW": auto's mean
against the better of ``sf_adamw`` and ``sf_adamw_10x``, a tie within the larger
seed-to-seed standard deviation.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from tasks import TASKS

LR_FREE = ("sf_adamw", "sf_adamw_10x", "sf_sgd", "prodigy_cos", "prodigy_probe", "dadapt_adam")
AUTO = {"auto_b0.1": 0.1, "auto": 0.3, "auto_b1": 1.0}  # the auto arms and their budgets
GROUPS = ("held out v6", "held out", "seen", "calibration")


def gap(metric: str, sign: int, ref: float, value: float) -> float:
    """Positive: ``value`` is worse than ``ref`` (accuracy points, or % of a loss)."""
    g = sign * (ref - value)
    return g if metric == "accuracy" else 100 * g / abs(ref)


# --- the summary of a suite's runs ------------------------------------------------------------


def beats_lr_free(sign: int, arms: dict[str, Any]) -> dict[str, bool] | None:
    """Per learning-rate-free arm that ran: does auto beat or tie it? A tie is a gap
    within the larger of the two arms' seed-to-seed standard deviations (in the order of
    ``arms``: the table's columns)."""
    auto = arms.get("auto")
    if not auto or auto["mean"] is None:
        return None
    out = {}
    for name in (a for a in arms if a in LR_FREE):
        other = arms[name]
        if other["n"] == 0 or (other.get("errors") and other["mean"] is None):
            continue
        if other["mean"] is None:  # it failed on some seed: auto beats it
            out[name] = True
            continue
        noise = max(auto["sd"], other["sd"])
        out[name] = sign * (auto["mean"] - other["mean"]) >= -noise
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair: the grid's mean per LR and its best, and each other arm's summary."""
    out: dict[str, Any] = {}
    for pair in dict.fromkeys(r["pair"] for r in results):
        task = TASKS[pair]
        sign = 1 if task.higher_is_better else -1
        rows = [r for r in results if r["pair"] == pair]
        grid: dict[float, list[float]] = {}
        for r in rows:
            if r["arm"] == "grid":
                grid.setdefault(r["param"], []).append(
                    r["score"] if r["score"] is not None else -sign * math.inf
                )
        grid_mean = {lr: statistics.mean(v) for lr, v in grid.items()}
        if not grid_mean:  # no grid (yet) for this pair: nothing to measure against
            continue
        best_lr = max(grid_mean, key=lambda k: sign * grid_mean[k])
        best = grid_mean[best_lr]
        arms_out: dict[str, Any] = {}
        for arm in dict.fromkeys(r["arm"] for r in rows if r["arm"] not in ("grid", "wd")):
            rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
            scores = [r["score"] for r in rs if r["score"] is not None]
            lrs = [r["lr"] for r in rs if r.get("lr")]
            failed = len(rs) - len(scores)
            mean = statistics.mean(scores) if scores and not failed else None
            arm_gap = None if mean is None else gap(task.metric, sign, best, mean)
            arms_out[arm] = {
                "mean": mean, "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "n": len(rs), "failed": failed, "gap": arm_gap,
                "lrs": lrs, "lr_spread": max(lrs) / min(lrs) if lrs else None,
                "compute_ratio": statistics.mean(r["compute_ratio"] for r in rs
                                                 if "compute_ratio" in r) if any(
                    "compute_ratio" in r for r in rs) else None,
                "errors": sorted({r.get("error") or r.get("skipped") for r in rs
                                  if r.get("error") or r.get("skipped")}),
            }  # fmt: skip
        wd_rows = [r for r in rows if r["arm"] == "wd"]
        wd_mean: dict[float, float] = {}
        for wd in dict.fromkeys(r["param"][1] for r in wd_rows):
            v = [r["score"] for r in wd_rows if r["param"][1] == wd and r["score"] is not None]
            if v:
                wd_mean[wd] = statistics.mean(v)
        out[pair] = {
            "group": task.group, "calibration": task.calibration, "metric": task.metric,
            "epochs": task.epochs,
            "opt": task.opt, "grid": {f"{k:.4g}": v for k, v in sorted(grid_mean.items())},
            "grid_best": {"lr": best_lr, "score": best}, "arms": arms_out,
            "wd_grid": {f"{k:g}": v for k, v in wd_mean.items()},
            "auto_beats_lr_free": beats_lr_free(sign, arms_out),
        }  # fmt: skip
    return out


def _cell(arm: dict[str, Any] | None, bold: bool = False) -> str:
    """An arm's mean and its gap to the grid's best; "failed k/n" if a run failed."""
    if not arm or arm["n"] == 0:
        return "–"
    if arm["mean"] is None:
        return f"failed {arm['failed']}/{arm['n']}"
    mark = "**" if bold else ""
    return f"{mark}{arm['mean']:.4g} ({arm['gap']:+.2f}){mark}"


def table(summary: dict[str, Any]) -> str:
    """Every pair x every arm, per group; then auto's picks, spread, compute and the wd grid."""
    arm_names = list(dict.fromkeys(a for p in summary.values() for a in p["arms"]))
    lines = []
    for group in GROUPS:
        lines.append(f"\n**{group}** (gap to the grid's best: accuracy points, or % of "
                     "bits/char or MSE; positive = worse than the grid)\n")  # fmt: skip
        lines.append("| pair | grid best | " + " | ".join(arm_names) + " |")
        lines.append("|---" * (len(arm_names) + 2) + "|")
        for pair, p in summary.items():
            if p.get("group", "calibration" if p["calibration"] else "held out") != group:
                continue
            cells = [_cell(p["arms"].get(a)) for a in arm_names]
            gb = p["grid_best"]
            lines.append(
                f"| {pair} | {gb['score']:.4g} @ {gb['lr']:.3g} | " + " | ".join(cells) + " |"
            )
    lines.append(
        "\n| pair | auto picks (per seed) | spread (max/min) | auto compute ratio | "
        "auto beats/ties LR-free arms | auto_wd | wd grid (at the grid's best lr) |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for pair, p in summary.items():
        a = p["arms"].get("auto", {})
        picks = ", ".join(f"{v:.3g}" for v in a.get("lrs", []))
        spread = f"{a['lr_spread']:.2f}" if a.get("lr_spread") else "–"
        ratio = f"{a['compute_ratio']:.3f}" if a.get("compute_ratio") else "–"
        w = ", ".join(f"{k}: {v:.4g}" for k, v in p["wd_grid"].items()) or "–"
        aw = p["arms"].get("auto_wd", {})
        b = p.get("auto_beats_lr_free")
        beats = "–" if not b else f"{sum(b.values())}/{len(b)}" + (
            f" (loses to {', '.join(k for k, v in b.items() if not v)})"
            if not all(b.values()) else "")  # fmt: skip
        awd = "–" if not aw.get("mean") else f"{aw['mean']:.4g}"
        lines.append(f"| {pair} | {picks} | {spread} | {ratio} | {beats} | {awd} | {w} |")
    return "\n".join(lines) + "\n"


def merge(paths: list[str], legacy: int = 0, legacy_name: str = "auto_v3") -> dict[str, Any]:
    """Several suite JSONs as one (``parts``, ``summary``, ``runs``); the sweep curves are
    dropped (the probes and picks are kept). A run of a later file replaces the run of an
    earlier one with the same pair, arm, seed and parameter (``--only`` re-runs); other
    seeds are added. The first ``legacy`` files ran an earlier rule: their arm ``auto``
    becomes ``legacy_name``, a column beside the current ``auto``."""
    runs: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []

    def key(r: dict[str, Any]) -> tuple:
        return r["pair"], r["arm"], r["seed"], json.dumps(r["param"])

    for i, path in enumerate(paths):
        d = json.loads(Path(path).read_text())
        if i < legacy:
            for r in d["runs"]:
                if r["arm"] == "auto":
                    r["arm"] = legacy_name
        if "parts" in d:  # an earlier merge: its parts, then its runs
            parts.extend(d["parts"])
        else:
            parts.append({"file": path, "args": d.get("args"), "seconds": d.get("seconds"),
                          "torch": d.get("torch")})  # fmt: skip
        new = {key(r) for r in d["runs"]}
        runs = [r for r in runs if key(r) not in new]
        for r in d["runs"]:
            r.pop("sweep", None)
            runs.append(r)
    return {"parts": parts, "summary": summarise(runs), "runs": runs}


# --- the v6 report: auto at three budgets against the learning-rate-free arms -----------------


def _within(task: Any, arm: dict[str, Any] | None) -> bool:
    return bool(arm) and arm["mean"] is not None and task.within_target(arm["gap"])


def counts(summary: dict[str, Any], main: str = "auto") -> dict[str, Any]:
    """Per pair and per group: what ``counts_table`` and ``plot`` show. The picks, their
    spread and the comparison with schedule-free AdamW are those of the arm ``main``."""
    pairs: dict[str, Any] = {}
    for pair, p in summary.items():
        task, arms = TASKS[pair], p["arms"]
        sign = 1 if task.higher_is_better else -1
        sf = [
            arms[a] for a in ("sf_adamw", "sf_adamw_10x") if arms.get(a, {}).get("mean") is not None
        ]
        best_sf = max(sf, key=lambda a: sign * a["mean"]) if sf else None
        auto = arms.get(main)
        ties_sf = None
        if auto and best_sf:
            ties_sf = auto["mean"] is not None and sign * (auto["mean"] - best_sf["mean"]) >= -max(
                auto["sd"], best_sf["sd"])  # fmt: skip
        pairs[pair] = {
            "group": task.group, "grid_best": p["grid_best"],
            "within": {a: _within(task, arms.get(a)) for a in [*AUTO, "auto_v5", *LR_FREE]
                       if a in arms},
            "gap": {a: arms[a]["gap"] for a in arms if a != "grid"},
            "spread": auto["lr_spread"] if auto else None,
            "compute": {a: arms[a]["compute_ratio"] for a in AUTO if a in arms},
            "ties_sf_adamw": ties_sf,
            "picks": auto["lrs"] if auto else [],
        }  # fmt: skip
    groups = {}
    for g in (*GROUPS, "all"):
        mine = [v for v in pairs.values() if g in ("all", v["group"])]
        groups[g] = {
            "pairs": len(mine),
            "within": {a: sum(v["within"].get(a, False) for v in mine)
                       for a in [*AUTO, "auto_v5", *LR_FREE]},
            "spread_x2": sum(1 for v in mine if v["spread"] is not None and v["spread"] <= 2),
            "ties_sf_adamw": sum(1 for v in mine if v["ties_sf_adamw"]),
        }  # fmt: skip
    return {"pairs": pairs, "groups": groups, "main": main}


def counts_table(rep: dict[str, Any], summary: dict[str, Any]) -> str:
    """Every pair x the auto arms (``auto_v5``: the version before, where it ran) and three
    learning-rate-free arms, within target in bold; then the counts per group."""
    cols = ["auto_v5", "auto_b0.1", "auto", "auto_b1", "sf_adamw", "sf_adamw_10x", "prodigy_probe"]
    main = rep.get("main", "auto")
    lines = ["| pair | group | grid best | " + " | ".join(cols) + f" | {main} picks | spread | "
             "compute (0.1 / 0.3 / 1.0) |", "|---" * (len(cols) + 6) + "|"]  # fmt: skip
    for pair, v in rep["pairs"].items():
        arms = summary[pair]["arms"]
        cells = [_cell(arms.get(a), bold=v["within"].get(a, False)) for a in cols]
        gb = v["grid_best"]
        picks = ", ".join(f"{x:.3g}" for x in v["picks"])
        spread = f"{v['spread']:.2f}" if v["spread"] else "–"
        comp = " / ".join(f"{v['compute'][a]:.2f}" if v["compute"].get(a) is not None else "–"
                          for a in AUTO)  # fmt: skip
        lines.append(f"| {pair} | {v['group']} | {gb['score']:.4g} @ {gb['lr']:.3g} | "
                     + " | ".join(cells) + f" | {picks} | {spread} | {comp} |")  # fmt: skip
    lines += ["", "| group | pairs | " + " | ".join(["auto_v5", *AUTO, *LR_FREE]) +
              f" | {main} spread <= x2 | {main} ties/beats sf AdamW |",
              "|---" * (len(AUTO) + len(LR_FREE) + 5) + "|"]  # fmt: skip
    for g, c in rep["groups"].items():
        w = c["within"]
        lines.append(f"| {g} | {c['pairs']} | " + " | ".join(
            str(w[a]) for a in ["auto_v5", *AUTO, *LR_FREE]) +
            f" | {c['spread_x2']} | {c['ties_sf_adamw']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rep: dict[str, Any], path: str) -> None:
    """Pairs within target against compute (run + search, in runs): auto at three
    budgets, the grid (9 runs), the learning-rate-free arms (1 run)."""
    import matplotlib

    matplotlib.use("Agg")  # a script of its own: no user backend to keep
    import matplotlib.pyplot as plt

    allg = rep["groups"]["all"]
    n = allg["pairs"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs, ys = [], []
    for a, b in AUTO.items():
        comps = [v["compute"].get(a) for v in rep["pairs"].values() if v["compute"].get(a)]
        if a in allg["within"]:  # at the median compute measured, else at most the budget
            xs.append(1 + (statistics.median(comps) if comps else b))
            ys.append(allg["within"][a])
            ax.annotate(f"budget {b:g}", (xs[-1], ys[-1]), textcoords="offset points",
                        xytext=(6, 6 if len(xs) % 2 else -12), fontsize=8)  # fmt: skip
    ax.plot(xs, ys, "o-", color="C0", label='lr_max="auto" at three budgets')
    ax.plot([9], [n], "s", color="k", label="grid: 9 runs (the target itself)")
    for i, a in enumerate(LR_FREE):  # all at one run; spread a little to be seen apart
        if allg["within"].get(a) is not None:
            ax.plot([1.0 + 0.012 * i], [allg["within"][a]], "x", color=f"C{i + 1}", label=a)
    ax.set_xscale("log")
    ax.set_xticks([1, 1.1, 1.3, 2, 3, 9], ["1", "1.1", "1.3", "2", "3", "9"])
    ax.set_xlabel("compute, in runs (the run + the search)")
    ax.set_ylabel(f"pairs within target (of {n})")
    ax.set_ylim(0, n + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# --- the noise-aware yardstick ----------------------------------------------------------------


def yardstick_rows(
    summary: dict[str, Any], runs: list[dict[str, Any]], fresh: list[dict[str, Any]],
    pairs: list[str], seeds: list[int],
) -> list[dict[str, Any]]:  # fmt: skip
    """Per pair: the grid's best LR at fresh seeds (``fresh``: its runs there) against
    auto's runs of the suite at the same seeds; a paired gap without the selection bias of
    the grid's best of nine means, and that bias (``optimism``) beside it."""
    rows = []
    for p in pairs:
        task, s = TASKS[p], summary[p]
        sign = 1 if task.higher_is_better else -1
        grid = [r["score"] for r in fresh if r["pair"] == p]
        auto = {r["seed"]: r for r in runs if r["pair"] == p and r["arm"] == "auto"}
        paired = [auto[k]["score"] for k in seeds if k in auto]
        refused = sum(v is None for v in paired)
        row: dict[str, Any] = {
            "pair": p, "group": task.group, "metric": task.metric,
            "grid_lr": s["grid_best"]["lr"], "grid_selected_score": s["grid_best"]["score"],
            "grid_fresh_seeds": grid, "auto_same_seeds": paired, "auto_refused": refused,
            "auto_picks_same_seeds": [auto[k].get("lr") for k in seeds if k in auto],
            "suite_gap": s["arms"].get("auto", {}).get("gap"),
        }  # fmt: skip
        if None not in grid and grid and paired and not refused:
            g_mean, a_mean = statistics.mean(grid), statistics.mean(paired)
            diffs = [gap(task.metric, sign, g, a) for g, a in zip(grid, paired)]
            row.update(grid_fresh_mean=g_mean, auto_mean=a_mean,
                       fresh_gap=gap(task.metric, sign, g_mean, a_mean),
                       optimism=gap(task.metric, sign, s["grid_best"]["score"], g_mean),
                       per_seed_gaps=diffs)  # fmt: skip
        rows.append(row)
    return rows


def yardstick_table(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = [
        f"Grid best re-run at fresh seeds {seeds} against auto at the same seeds "
        "(positive gap = auto worse: accuracy points, or % of bits/char or MSE)\n",
        "| pair | group | grid LR | suite gap | grid: selection score -> fresh seeds "
        "(optimism) | auto, same seeds | fresh gap | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "fresh_gap" not in r:
            if r["auto_refused"]:
                why = f"auto refused {r['auto_refused']} of {len(r['auto_same_seeds'])}"
            elif not r["auto_same_seeds"]:
                why = "no auto run at these seeds"
            else:
                why = "a grid run failed"
            lines.append(f"| {r['pair']} | {r['group']} | {r['grid_lr']:.3g} | – | – | – | "
                         f"– ({why}) | – |")  # fmt: skip
            continue
        sg = "–" if r["suite_gap"] is None else f"{r['suite_gap']:+.2f}"
        lines.append(
            f"| {r['pair']} | {r['group']} | {r['grid_lr']:.3g} | {sg} | "
            f"{r['grid_selected_score']:.4g} -> {r['grid_fresh_mean']:.4g} "
            f"({r['optimism']:+.2f}) | {r['auto_mean']:.4g} | **{r['fresh_gap']:+.2f}** | "
            + " ".join(f"{d:+.2f}" for d in r["per_seed_gaps"])
            + " |"
        )
    return "\n".join(lines) + "\n"
