"""The horizon bias of lr_max="auto" v6, measured and corrected (``auto.HORIZON_BETA``).

    .venv/bin/python benchmarks/auto_lr/horizon.py runs/v6/beta0_b03.json \\
        --grids docs/results/auto_lr_suite_v5.json docs/results/auto_lr_suite_clip.json \\
                docs/results/auto_lr_grid_v6.json --json docs/results/auto_lr_horizon.json

Reads the runs of an *uncorrected* search (``HORIZON_BETA = 0``): every candidate's
branch score at every rung. For each exponent ``beta`` it re-makes the pick as
``onecycle.auto.horizon`` would (the last rung's best x (rung / run) ** beta, rounded to
the nearest candidate trained) and scores it by the pair's grid: the grid's mean at that
LR (the grid's seeds are the search's), as a gap to the grid's best in the suite's units.
Trains nothing. ``beta`` is chosen on the **calibration** and **seen** pairs only (most
pairs within target; the smaller ``beta`` on a tie); the held-out pairs say whether it
carries over.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import TASKS

BETAS = [round(0.1 * i, 1) for i in range(11)]
FIT_GROUPS = ("calibration", "seen")


def grids(paths: list[str]) -> dict[str, dict[int, list[float | None]]]:
    """pair -> {lattice index k (LR = 10**(k/2)): grid scores over seeds}."""
    out: dict[str, dict[int, list[float | None]]] = defaultdict(dict)
    for path in paths:
        for r in json.loads(Path(path).read_text())["runs"]:
            if r["arm"] == "grid":
                k = round(2 * math.log10(r["param"]))
                out[r["pair"]].setdefault(k, []).append(r["score"])
    return out


def gap(pair: str, grid: dict[int, list[float | None]], k: int) -> float | None:
    """The grid's mean at lattice point ``k`` against its best, in the suite's units."""
    task = TASKS[pair]
    sign = 1 if task.higher_is_better else -1
    bad = -sign * 1e9  # a failed grid run counts as far worse than any score

    def mean(v: list[float | None]) -> float:
        return statistics.mean(x if x is not None else bad for x in v)

    means = {kk: mean(v) for kk, v in grid.items()}
    if k not in means:
        return None
    best = max(means.values(), key=lambda x: sign * x)
    g = sign * (best - means[k])
    return 100 * g / abs(best) if task.metric != "accuracy" else g


def pick(run: dict[str, Any], beta: float) -> int | None:
    """The lattice index ``horizon`` picks at ``beta`` from a run's recorded prefixes."""
    prefixes = [p for p in run.get("prefixes") or [] if p["scores"]]
    if not prefixes:
        return None
    last = max(int(k) for p in prefixes for k in p["scores"])
    at = [p for p in prefixes if p["scores"].get(str(last)) is not None]
    if not at:
        return None
    best = min(at, key=lambda p: p["scores"][str(last)])
    target = math.log10(best["lr_max"]) - beta * math.log10(run["train_steps"] / last)
    ok = [p for p in prefixes if p["lr_max"] <= best["lr_max"] * (1 + 1e-9)
          and any(v is not None for v in p["scores"].values())]  # fmt: skip
    chosen = min(ok, key=lambda p: (abs(math.log10(p["lr_max"]) - target), p["lr_max"]))
    return round(2 * math.log10(chosen["lr_max"]))


def evaluate(runs: list[dict[str, Any]], grid: dict[str, Any], beta: float) -> dict[str, Any]:
    """Per pair: the mean gap of the re-made picks, and whether it is within target."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by[r["pair"]].append(r)
    out = {}
    for pair, rs in sorted(by.items()):
        ks = [pick(r, beta) for r in rs]
        gaps = [gap(pair, grid[pair], k) for k in ks if k is not None]
        gaps = [g for g in gaps if g is not None]
        if not gaps or not grid.get(pair):
            continue
        m = statistics.mean(gaps)
        out[pair] = {"group": TASKS[pair].group, "gap": m, "within": TASKS[pair].within_target(m),
                     "picks": [None if k is None else 10 ** (k / 2) for k in ks]}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="suite JSONs of an uncorrected v6 search")
    ap.add_argument("--grids", nargs="+", required=True, help="suite JSONs with grid runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    grid = grids(args.grids)
    runs = [r for p in args.runs for r in json.loads(Path(p).read_text())["runs"]
            if r.get("prefixes") and r["pair"] in grid]  # fmt: skip
    table = {b: evaluate(runs, grid, b) for b in BETAS}

    def count(res: dict[str, Any], groups: tuple[str, ...]) -> int:
        return sum(v["within"] for v in res.values() if v["group"] in groups)

    fitted = max(BETAS, key=lambda b: (count(table[b], FIT_GROUPS), -b))
    groups = sorted({v["group"] for res in table.values() for v in res.values()})
    print("beta  " + "  ".join(f"{g:>14}" for g in groups))
    for b in BETAS:
        n = {g: sum(1 for v in table[b].values() if v["group"] == g) for g in groups}
        cells = [f"{count(table[b], (g,))}/{n[g]}" for g in groups]
        print(f"{b:<5} " + "  ".join(f"{c:>14}" for c in cells) + ("  <- fitted" if b == fitted
                                                                     else ""))  # fmt: skip
    print(f"\nfitted on {', '.join(FIT_GROUPS)}: beta = {fitted}")
    for pair, v in table[fitted].items():
        base = table[0.0][pair]
        print(f"  {pair:28} {v['group']:12} gap {base['gap']:+7.2f} -> {v['gap']:+7.2f}  "
              f"picks {[f'{p:.3g}' for p in v['picks'] if p]}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"fitted": fitted, "fit_groups": FIT_GROUPS,
                                               "by_beta": {str(b): t for b, t in table.items()}},
                                              indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
