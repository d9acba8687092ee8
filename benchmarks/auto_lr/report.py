"""The v6 report of the lr_max="auto" suite: every pair x arm, the counts per group, the
budget curve (pairs within target against compute), from one merged suite JSON.

    .venv/bin/python benchmarks/auto_lr/report.py docs/results/auto_lr_suite_v6.json \\
        --table docs/results/auto_lr_v6_table.md --plot docs/img/auto_lr_budget.png

The arms it reads: ``auto`` (the default budget, 0.3), ``auto_b0.1`` and ``auto_b1``
(budgets 0.1 and 1.0), ``auto_v5`` (the version before, where it ran), and the
learning-rate-free arms. "Within target" is the suite's (``Task.within_target``: 0.5
points, or 2% of bits/char or MSE, of the grid's best mean); a failed run (refused or
non-finite) is a miss. Spread: max/min of the picks over the seeds run. "Ties or beats
schedule-free AdamW": auto's mean against the better of ``sf_adamw`` and
``sf_adamw_10x``, a tie within the larger seed-to-seed standard deviation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

AUTO = {"auto_b0.1": 0.1, "auto": 0.3, "auto_b1": 1.0}
LR_FREE = ("sf_adamw", "sf_adamw_10x", "sf_sgd", "prodigy_cos", "prodigy_probe", "dadapt_adam")
GROUPS = ("held out v6", "held out", "seen", "calibration")


def _within(task: Any, arm: dict[str, Any] | None) -> bool:
    return bool(arm) and arm["mean"] is not None and task.within_target(arm["gap"])


def report(summary: dict[str, Any]) -> dict[str, Any]:
    """Per pair and per group: what the table and the plot show."""
    from tasks import TASKS

    pairs: dict[str, Any] = {}
    for pair, p in summary.items():
        task, arms = TASKS[pair], p["arms"]
        sign = 1 if task.higher_is_better else -1
        sf = [
            arms[a] for a in ("sf_adamw", "sf_adamw_10x") if arms.get(a, {}).get("mean") is not None
        ]
        best_sf = max(sf, key=lambda a: sign * a["mean"]) if sf else None
        auto = arms.get("auto")
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
    return {"pairs": pairs, "groups": groups}


def table(rep: dict[str, Any], summary: dict[str, Any]) -> str:
    cols = ["auto_v5", "auto_b0.1", "auto", "auto_b1", "sf_adamw", "sf_adamw_10x", "prodigy_probe"]
    lines = ["| pair | group | grid best | " + " | ".join(cols) + " | auto picks | spread | "
             "compute (0.1 / 0.3 / 1.0) |", "|---" * (len(cols) + 6) + "|"]  # fmt: skip
    for pair, v in rep["pairs"].items():
        arms = summary[pair]["arms"]
        cells = []
        for a in cols:
            r = arms.get(a)
            if not r or r["n"] == 0:
                cells.append("–")
            elif r["mean"] is None:
                cells.append(f"failed {r['failed']}/{r['n']}")
            else:
                mark = "**" if v["within"].get(a) else ""
                cells.append(f"{mark}{r['mean']:.4g} ({r['gap']:+.2f}){mark}")
        gb = v["grid_best"]
        picks = ", ".join(f"{x:.3g}" for x in v["picks"])
        spread = f"{v['spread']:.2f}" if v["spread"] else "–"
        comp = " / ".join(f"{v['compute'][a]:.2f}" if v["compute"].get(a) is not None else "–"
                          for a in AUTO)  # fmt: skip
        lines.append(f"| {pair} | {v['group']} | {gb['score']:.4g} @ {gb['lr']:.3g} | "
                     + " | ".join(cells) + f" | {picks} | {spread} | {comp} |")  # fmt: skip
    lines += ["", "| group | pairs | " + " | ".join(["auto_v5", *AUTO, *LR_FREE]) +
              " | auto spread <= x2 | auto ties/beats sf AdamW |",
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
                        xytext=(6, -10), fontsize=8)  # fmt: skip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="a merged suite JSON (merge.py)")
    ap.add_argument(
        "--counts",
        action="store_true",
        help="SUITE holds counts already ({'groups': ..., 'pairs': {}}): plot them",
    )
    ap.add_argument("--table", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    if args.counts:
        plot(json.loads(Path(args.suite).read_text()), args.plot)
        return
    summary = json.loads(Path(args.suite).read_text())["summary"]
    rep = report(summary)
    text = table(rep, summary)
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    if args.plot:
        plot(rep, args.plot)


if __name__ == "__main__":
    main()
