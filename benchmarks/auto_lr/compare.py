"""Two arms of a suite JSON side by side, on the seeds that both ran: the gap to the grid's
best, whether it is within the suite's target (0.5 points, or 2% of bits/char or MSE),
the compute ratio and the runs that fell back, pair by pair, and the counts per group.

An arm run later on fewer seeds (``suite.py --only ARM --seeds 2``, merged with
``merge.py``) is compared with the other arm's runs at the same seeds, not with its
mean over more seeds; the grid is the same for both.

    .venv/bin/python benchmarks/auto_lr/compare.py runs/top/merged.json auto auto_top \\
        --json docs/results/auto_lr_top.json --table docs/results/auto_lr_top.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

GROUPS = ("held out", "seen", "calibration")


def compare(runs: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Per pair: each arm's summary (``suite.summarise``) over the seeds both ran."""
    from suite import summarise
    from tasks import TASKS

    out: dict[str, Any] = {}
    for pair in dict.fromkeys(r["pair"] for r in runs):
        mine = [r for r in runs if r["pair"] == pair]
        seeds = [{r["seed"] for r in mine if r["arm"] == arm} for arm in (a, b)]
        common = seeds[0] & seeds[1]
        if not common:
            continue
        keep = [r for r in mine if r["arm"] == "grid" or (r["arm"] in (a, b)
                                                          and r["seed"] in common)]  # fmt: skip
        s = summarise(keep)[pair]
        row = {"group": s["group"], "metric": s["metric"], "grid_best": s["grid_best"],
               "seeds": sorted(common)}  # fmt: skip
        for arm in (a, b):
            arm_runs = [r for r in keep if r["arm"] == arm]
            summ = s["arms"][arm]
            row[arm] = {
                "gap": summ["gap"], "within": TASKS[pair].within_target(summ["gap"]),
                "lrs": summ["lrs"], "compute_ratio": summ["compute_ratio"],
                "n": summ["n"], "failed": summ["failed"],
                "rollbacks": sum(len(r.get("rollbacks") or []) for r in arm_runs),
            }  # fmt: skip
        out[pair] = row
    return out


def table(rows: dict[str, Any], a: str, b: str) -> str:
    def cell(r: dict[str, Any]) -> str:
        if r["gap"] is None:
            return f"failed {r['failed']}/{r['n']}"
        return f"{r['gap']:+.2f}" + (" ✓" if r["within"] else "")

    def extra(r: dict[str, Any]) -> str:
        ratio = "–" if r["compute_ratio"] is None else f"{r['compute_ratio']:.2f}"
        return f"{ratio} | {r['rollbacks']}"

    lines = [f"| pair | group | seeds | grid best | {a} | {b} | {a} picks | {b} picks | "
             f"{a} compute | {a} fell back | {b} compute | {b} fell back |",
             "|---" * 12 + "|"]  # fmt: skip
    for group in GROUPS:
        for pair, r in rows.items():
            if r["group"] != group:
                continue
            picks = [", ".join(f"{v:.3g}" for v in r[arm]["lrs"]) or "–" for arm in (a, b)]
            gb = r["grid_best"]
            lines.append(f"| {pair} | {group} | {len(r['seeds'])} | {gb['score']:.4g} @ "
                         f"{gb['lr']:.3g} | {cell(r[a])} | {cell(r[b])} | {picks[0]} | "
                         f"{picks[1]} | {extra(r[a])} | {extra(r[b])} |")  # fmt: skip
    lines.append("")
    lines.append(f"| within target | {' | '.join(GROUPS)} | all |")
    lines.append("|---" * (len(GROUPS) + 2) + "|")
    for arm in (a, b):
        counts = [(sum(r[arm]["within"] for r in rows.values() if r["group"] == g),
                   sum(r["group"] == g for r in rows.values())) for g in GROUPS]  # fmt: skip
        total = (sum(c for c, _ in counts), sum(n for _, n in counts))
        lines.append(f"| {arm} | " + " | ".join(f"{c}/{n}" for c, n in [*counts, total]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="a suite JSON (merge.py's output) with both arms and the grid")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--json", required=True)
    ap.add_argument("--table", required=True)
    args = ap.parse_args()
    runs = json.loads(Path(args.suite).read_text())["runs"]
    rows = compare(runs, args.a, args.b)
    text = table(rows, args.a, args.b)
    Path(args.json).write_text(json.dumps({"source": args.suite, "arms": [args.a, args.b],
                                           "pairs": rows}, indent=1))  # fmt: skip
    Path(args.table).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
