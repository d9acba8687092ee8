"""A noise-aware yardstick for the auto_lr suite: the grid's best LR re-run at fresh seeds.

The suite's "grid best" is the best of nine 2-seed means (seeds 0 and 1): a maximum of
noisy estimates, biased in the grid's favour. Here the LR it selected is trained again at
seeds that played no part in selecting it (default 2, 3, 4) and compared with auto's runs
at the same seeds (the suite ran auto at seeds 0-4): a paired gap without the selection
bias. The suite's own gap is printed beside it. Pairs listed in ``--skip`` are left out
(Fashion-MNIST's take ~3 minutes a run).

    .venv/bin/python benchmarks/auto_lr/yardstick.py --suite docs/results/auto_lr_suite_v3.json \\
        --skip fashion-cnn-sgd fashion-cnn-adamw --workers 2 \\
        --json docs/results/auto_lr_yardstick_v3.json --table docs/results/auto_lr_yardstick_v3.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def gap(metric: str, sign: int, ref: float, value: float) -> float:
    """Positive: ``value`` is worse than ``ref`` (accuracy points, or % of a loss)."""
    g = sign * (ref - value)
    return g if metric == "accuracy" else 100 * g / abs(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, help="a suite JSON (grid and auto runs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reuse", nargs="*", default=[],
                    help="earlier yardstick JSONs: their fresh runs (same pair, LR, seed) "
                         "are taken instead of run again")  # fmt: skip
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None)
    args = ap.parse_args()
    import suite
    from tasks import TASKS

    data = json.loads(Path(args.suite).read_text())
    summary, runs = data["summary"], data["runs"]
    pairs = [p for p in summary if p not in args.skip and p in TASKS]
    jobs = [(p, "grid", summary[p]["grid_best"]["lr"], s, "cpu", False, 1)
            for p in pairs for s in args.seeds]  # fmt: skip
    done = {(r["pair"], round(r["param"], 9), r["seed"]): r
            for f in args.reuse for r in json.loads(Path(f).read_text())["fresh_runs"]}  # fmt: skip
    fresh = [done[k] for j in jobs if (k := (j[0], round(j[2], 9), j[3])) in done]
    jobs = [j for j in jobs if (j[0], round(j[2], 9), j[3]) not in done]
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            fresh += list(pool.imap_unordered(suite._job, jobs))
    else:
        fresh += [suite._job(j) for j in jobs]
    rows = []
    for p in pairs:
        task, s = TASKS[p], summary[p]
        sign = 1 if task.higher_is_better else -1
        grid = [r["score"] for r in fresh if r["pair"] == p]
        auto = {r["seed"]: r for r in runs if r["pair"] == p and r["arm"] == "auto"}
        paired = [auto[k]["score"] for k in args.seeds if k in auto]
        refused = sum(v is None for v in paired)
        row: dict[str, Any] = {
            "pair": p, "group": task.group, "metric": task.metric,
            "grid_lr": s["grid_best"]["lr"], "grid_selected_score": s["grid_best"]["score"],
            "grid_fresh_seeds": grid, "auto_same_seeds": paired, "auto_refused": refused,
            "auto_picks_same_seeds": [auto[k].get("lr") for k in args.seeds if k in auto],
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
    lines = [
        f"Grid best re-run at fresh seeds {args.seeds} against auto at the same seeds "
        "(positive gap = auto worse: accuracy points, or % of bits/char or MSE)\n",
        "| pair | group | grid LR | suite gap | grid: selection score -> fresh seeds "
        "(optimism) | auto, same seeds | fresh gap | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "fresh_gap" not in r:
            why = f"auto refused {r['auto_refused']} of {len(r['auto_same_seeds'])}" if r[
                "auto_refused"] else "a grid run failed"  # fmt: skip
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
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        out = {"args": vars(args), "rows": rows, "fresh_runs": fresh}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if args.table:
        Path(args.table).write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
