"""The auto step alone, under other constants: which peak would it pick, and what would
that cost?

For each pair and seed this runs only ``onecycle.auto.auto_lr_max`` (the sweep and the
probes, no training run), with any of its module constants replaced (``--set``), and
scores the pick by the grid's run at that LR in the suite's JSON (``--grid``), the same
seed's where the grid has it (the run at the pick is then that very run), else the grid's
mean: the *regret* is the full-run score lost by training at the pick instead of the grid's best
(points, or % of bits/char or MSE; positive = worse). The fallback is not simulated: a
pick that would collapse and fall back is scored where it was picked.

It is a cheap screen for a change of the rule, not evidence: a rule chosen from its output
on a pair must be quoted on pairs it never saw (tasks.py declares the groups), and the
real runs (suite.py) decide.

    .venv/bin/python benchmarks/auto_lr/picks.py --pairs mnist1d-cnn-sgd \\
        --grid docs/results/auto_lr_suite_v4.json --set PROBE_FRAC=0.02 --json runs/picks.json
    .venv/bin/python benchmarks/auto_lr/picks.py --summarise runs/picks*.json \\
        --json picks_all.json --table picks.md   # every configuration, one table
    .venv/bin/python benchmarks/auto_lr/picks.py --rules docs/results/auto_lr_suite_v5.json \\
        --json runs/rules.json --table runs/rules.md   # fixed choices among the candidates

``--rules`` runs nothing either: it takes the candidates and probe losses that each ``auto``
run of a suite JSON recorded and scores fixed choices among them by the same grid: the
top candidate (the lattice point at or below half the blow-up, what a rule from the
sweep alone would train at), the second and third, the best probe (v4), and one
lattice step above the best probe. It tells what the sweep alone is worth and what the
probes add.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def grid_runs(path: str, pair: str) -> dict[tuple[float, int], float | None]:
    from fidelity import suite_runs

    runs = suite_runs(path)
    return {(round(float(r["param"]), 8), r["seed"]): r["score"]
            for r in runs if r["pair"] == pair and r["arm"] == "grid"}  # fmt: skip


def regret(
    means: dict[float, float | None],
    runs: dict[tuple[float, int], float | None],
    lr: float | None,
    seed: int,
    higher: bool,
) -> float | None:
    """Full-run score lost at ``lr`` against the grid's best (its mean over seeds); None off
    the grid or failed."""
    done = {k: v for k, v in means.items() if v is not None}
    if lr is None or not done:
        return None
    key = next((k for k in means if abs(k / lr - 1) < 1e-3), None)
    if key is None:
        return None
    at = runs.get((key, seed), means[key])
    if at is None:
        return None
    best = max(done.values()) if higher else min(done.values())
    return best - at if higher else 100 * (at / best - 1)


def summarise(paths: list[str]) -> tuple[dict[str, Any], str]:
    """Merge picks JSONs; a table of mean regret and compute per pair x configuration."""
    from tasks import TASKS

    runs = [r for p in paths for r in json.loads(Path(p).read_text())["runs"]]
    tags = list(dict.fromkeys(r["tag"] for r in runs))
    pairs = list(dict.fromkeys(r["pair"] for r in runs))
    sets = {t: " ".join(next(r["set"] for r in runs if r["tag"] == t)) for t in tags}
    head = " | ".join(f"{t} ({sets[t] or 'as shipped'})" for t in tags)
    lines = [f"| pair | group | {head} |", "|---|---|" + "---|" * len(tags)]
    for pair in pairs:
        cells = []
        for t in tags:
            mine = [r for r in runs if r["pair"] == pair and r["tag"] == t]
            regs = [r["regret"] for r in mine if r["regret"] is not None]
            if not mine:
                cells.append("–")
                continue
            reg = f"{statistics.fmean(regs):+.2f}" if regs else "–"
            refused = sum(r["lr"] is None for r in mine)
            off = len(mine) - len(regs) - refused
            none = (f", {refused} refused" if refused else "") + (
                f", {off} off the grid" if off else ""
            )
            comp = statistics.fmean(r["compute_ratio"] for r in mine)
            cells.append(f"{reg} ({comp:.2f}{none})")
        group = TASKS[pair].group if pair in TASKS else "?"
        lines.append(f"| {pair} | {group} | {' | '.join(cells)} |")
    return {"runs": runs}, "\n".join(lines) + "\n"


RULES = {
    "top": lambda cands, best: cands[0],
    "second": lambda cands, best: cands[1] if len(cands) > 1 else None,
    "third": lambda cands, best: cands[2] if len(cands) > 2 else None,
    "best probe": lambda cands, best: best,
    "best probe x3.16": lambda cands, best: best * 10**0.5,
}


def rules(path: str) -> tuple[dict[str, Any], str]:
    """Mean regret per pair of each fixed choice in ``RULES`` among the candidates that the
    suite's ``auto`` runs recorded (see the module's docstring), and how many pairs each
    keeps within the suite's target (0.5 points, or 2% of bits/char or MSE)."""
    from fidelity import grid_means, suite_runs
    from tasks import TASKS

    autos = [r for r in suite_runs(path) if r["arm"] == "auto" and r.get("probes")]
    rows: list[dict[str, Any]] = []
    for pair in dict.fromkeys(r["pair"] for r in autos):
        task = TASKS[pair]
        means, runs = grid_means(path, pair), grid_runs(path, pair)
        for r in (r for r in autos if r["pair"] == pair):
            probes = {p["lr_max"]: p["loss"] for p in r["probes"]}
            best = min(r["candidates"], key=lambda c: probes.get(c, float("inf")))
            for name, rule in RULES.items():
                lr = rule(r["candidates"], best)
                rows.append({"pair": pair, "group": task.group, "seed": r["seed"], "rule": name,
                             "lr": lr, "regret": regret(means, runs, lr, r["seed"],
                                                        task.higher_is_better)})  # fmt: skip
    names = list(RULES)
    lines = [f"| pair | group | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
    within = dict.fromkeys(names, 0)
    for pair in dict.fromkeys(r["pair"] for r in rows):
        task, cells = TASKS[pair], []
        for name in names:
            regs = [r["regret"] for r in rows if r["pair"] == pair and r["rule"] == name
                    and r["regret"] is not None]  # fmt: skip
            mean = statistics.fmean(regs) if regs else None
            ok = task.within_target(mean)
            within[name] += ok
            cells.append("–" if mean is None else f"{mean:+.2f}" + (" ✓" if ok else ""))
        lines.append(f"| {pair} | {task.group} | {' | '.join(cells)} |")
    n = len(dict.fromkeys(r["pair"] for r in rows))
    lines.append(f"| **within target** | | {' | '.join(f'{within[k]}/{n}' for k in names)} |")
    return {"source": path, "runs": rows, "within": within}, "\n".join(lines) + "\n"


def main() -> None:
    import arms
    import torch
    from fidelity import grid_means
    from tasks import TASKS

    from onecycle import auto as A

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", nargs="+")
    ap.add_argument("--grid", help="the suite's JSON with the grid runs")
    ap.add_argument("--summarise", nargs="+", metavar="JSON", help="merge these; run nothing")
    ap.add_argument("--rules", metavar="JSON", help="a suite's JSON: score fixed choices")
    ap.add_argument("--table", help="with --summarise or --rules: the markdown table")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="onecycle.auto constants to replace, e.g. DIV_TOP=0.5")  # fmt: skip
    ap.add_argument("--tag", default="", help="a name for this configuration in the JSON")
    ap.add_argument("--lattice", action="store_true",
                    help="v4's pick: the best probe's own LR (auto.between off)")  # fmt: skip
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if args.summarise or args.rules:
        merged, table = summarise(args.summarise) if args.summarise else rules(args.rules)
        Path(args.json).write_text(json.dumps(merged, indent=1))
        if args.table:
            Path(args.table).write_text(table)
        print(table)
        return
    if not args.pairs or not args.grid:
        ap.error("--pairs and --grid are required (or --summarise)")
    torch.set_num_threads(1)
    for item in args.set:
        name, value = item.split("=", 1)
        if not hasattr(A, name):
            raise SystemExit(f"--set: onecycle.auto has no constant {name}")
        setattr(A, name, type(getattr(A, name))(float(value)))
    if args.lattice:  # v4: no move between lattice points
        A.between = lambda lrs, losses: lrs[min(range(len(lrs)), key=lambda j: losses[j])]
        args.set = [*args.set, "lattice"]
    out_path = Path(args.json)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {"runs": []}
    for pair in args.pairs:
        task = TASKS[pair]
        if task.fine_tune:
            raise SystemExit(f"{pair}: fine-tuning picks its peak inside fine_tune; not here")
        means, runs = grid_means(args.grid, pair), grid_runs(args.grid, pair)
        for seed in args.seeds:
            b = task.build(seed, args.device, False)
            learn = arms._learner(task, b, args.device)
            total = arms._steps(task, learn)
            res = A.auto_lr_max(learn, total, budget=A.BUDGET, probe_frac=A.PROBE_FRAC,
                                num_it=A.SWEEP_STEPS)  # fmt: skip
            row = {
                "tag": args.tag, "set": args.set, "pair": pair, "group": task.group,
                "seed": seed, "lr": res.lr_max, "candidates": res.candidates,
                "probes": {f"{p.lr_max:.4g}": p.loss for p in res.probes},
                "compute_ratio": res.compute_ratio,
                "regret": regret(means, runs, res.lr_max, seed, task.higher_is_better),
                "reason": res.reason,
            }  # fmt: skip
            out["runs"].append(row)
            print(f"{args.tag or '-':10s} {pair:22s} s{seed} pick {res.lr_max!s:8.6s} "
                  f"regret {row['regret']!s:8.6s} compute {res.compute_ratio:.3f} "
                  f"cands {[f'{c:.3g}' for c in res.candidates]}", flush=True)  # fmt: skip
        mine = [r for r in out["runs"] if r["pair"] == pair and r["tag"] == args.tag]
        regs = [r["regret"] for r in mine if r["regret"] is not None]
        print(f"== {args.tag or '-'} {pair}: mean regret "
              f"{statistics.fmean(regs) if regs else float('nan'):.3g} "
              f"({len(mine) - len(regs)} unscored), compute "
              f"{statistics.fmean(r['compute_ratio'] for r in mine):.3f}", flush=True)  # fmt: skip
        out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
