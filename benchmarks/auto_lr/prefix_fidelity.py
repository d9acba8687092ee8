"""Do prefixes of the real run, past the warm-up's peak, rank 1cycle peaks as full runs do?

For each pair and seed: the grid's LRs within two lattice steps of its best, each trained
as a prefix of its own 1cycle over the whole run (``onecycle.prefixes.advance``: the real
warm-up, momentum, batches) to a few fractions of the run, each rung scored by a
cool-down branch (a quarter of the prefix) on a validation split held back from the
training data. The full runs' scores come from the suite's JSON (``--grid``): nothing
here re-trains the grid. Per rung, the output holds every candidate's held-back loss, the
one ranked first, and its regret (the full-run score lost by training there instead of
at the grid's best).

    .venv/bin/python benchmarks/auto_lr/prefix_fidelity.py --pairs mnist1d-gru-adamw \\
        --grid docs/results/auto_lr_suite_v62_budgets.json --json runs/pf.json
    .venv/bin/python benchmarks/auto_lr/prefix_fidelity.py --report runs/pf.json --seed 0 \\
        --probes docs/results/auto_lr_v62_5seeds.json auto

``--report``: a duel simulated on those losses, per group of pairs: around the lattice
point nearest the pick of a run of ``--probes FILE ARM`` (same seed), the two neighbours
(``k3``) or the neighbour on the side the probes or the pick lean to (``k2``), ranked at
each rung; counted within the suite's target when the grid's full-run mean at the
winner is (the lattice-rounded pick alone: ``probe``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def grid_means(path: str, pair: str) -> dict[float, float | None]:
    runs = json.loads(Path(path).read_text())["runs"]
    by: dict[float, list[float | None]] = {}
    for r in runs:
        if r["pair"] == pair and r["arm"] == "grid":
            by.setdefault(round(float(r["param"]), 8), []).append(r["score"])
    return {lr: (None if any(s is None for s in v) else statistics.fmean(v))  # type: ignore[misc]
            for lr, v in by.items()}  # fmt: skip


def one(job: tuple[str, int, str, list[float], int]) -> dict[str, Any]:
    import arms
    import torch
    from tasks import TASKS

    from onecycle.auto import default_spec
    from onecycle.prefix_search import held_batches, scoring_batches
    from onecycle.prefixes import Prefix, advance, held_loss
    from onecycle.scheduler import momentum_key

    pair, seed, grid_path, fracs, steps_k = job
    torch.set_num_threads(1)
    task = TASKS[pair]
    sign = 1 if task.higher_is_better else -1
    grid = grid_means(grid_path, pair)
    ok = {lr: s for lr, s in grid.items() if s is not None}
    best = max(ok, key=lambda lr: sign * ok[lr])
    lrs = [lr for lr in sorted(grid) if best / 10**(steps_k / 2 + 0.01) <= lr
           <= best * 10**(steps_k / 2 + 0.01)]  # fmt: skip
    b = task.build(seed, "cpu", False)
    learn = arms._learner(task, b, "cpu")
    learn._make_opt([1e-3] * len(learn.param_groups))
    rest, held, note = scoring_batches(learn, held_batches(learn))
    learn.train_data = rest
    total = task.epochs * learn.steps_per_epoch()
    has_mom = momentum_key(learn.opt) is not None
    end_mom = learn.moms[2] if has_mom else None
    start = held_loss(learn, held)
    rungs = sorted({max(4, round(f * total)) for f in fracs})
    scores: dict[float, dict[int, float]] = {}
    for lr in lrs:
        p = Prefix(lr)
        for to in rungs:
            if p.diverged:
                break
            advance(learn, p, to, n_epoch=task.epochs, lrs=[lr] * len(learn.param_groups),
                    spec=default_spec([lr] * len(learn.param_groups), None, has_mom),
                    total=total, held=held, wd=None, end_mom=end_mom, cbs=learn.cbs)  # fmt: skip
        scores[lr] = {to: p.scores.get(to, math.inf) for to in rungs}
    rows = {}
    for to in rungs:
        top = min(lrs, key=lambda lr: scores[lr][to])
        full = grid.get(top)
        rows[str(to)] = {"frac": to / total, "top": top,
                         "regret": None if full is None else sign * (ok[best] - full)}  # fmt: skip
    tops = {k: (f"{v['frac']:.2f}", f"{v['top']:.3g}", v["regret"]) for k, v in rows.items()}
    print(pair, seed, tops, flush=True)
    return {"pair": pair, "seed": seed, "total_steps": total, "grid_best": best, "note": note,
            "start": start, "grid": {f"{k:.4g}": v for k, v in grid.items()},
            "losses": {f"{lr:.4g}": {str(k): v for k, v in s.items()} for lr, s in scores.items()},
            "rungs": rows}  # fmt: skip


def report(path: str, seed: int, probes_path: str, arm: str) -> dict[str, dict[str, int]]:
    """Pairs within target per (design, group): module docstring, ``--report``."""
    from report import gap
    from tasks import TASKS

    def lat(x: float) -> float:
        return 10 ** (round(2 * math.log10(x)) / 2)

    picks = {r["pair"]: r for r in json.loads(Path(probes_path).read_text())["runs"]
             if r["arm"] == arm and r["seed"] == seed}  # fmt: skip
    counts: dict[str, dict[str, int]] = {}
    for row in json.loads(Path(path).read_text()):
        pr = picks.get(row["pair"])
        if row["seed"] != seed or pr is None or pr["lr"] is None:
            continue
        task = TASKS[row["pair"]]
        sign = 1 if task.higher_is_better else -1
        grid = {k: v for k, v in row["grid"].items() if v is not None}
        best = max(grid.values(), key=lambda v: sign * v)
        group = "calibration+seen" if task.group in ("calibration", "seen") else "held out"

        def ok(key: str | None, task=task, sign=sign, grid=grid, best=best) -> bool:
            v = None if key is None else grid.get(key)
            return v is not None and task.within_target(gap(task.metric, sign, best, v))

        q = lat(pr["lr"])
        up, dn = f"{q * 10**0.5:.4g}", f"{q / 10**0.5:.4g}"
        seen = {f"{lat(p['lr_max']):.4g}": math.inf if p["loss"] is None else p["loss"]
                for p in pr["probes"]}  # fmt: skip
        lean = up if pr["lr"] > q * 1.0001 else dn if pr["lr"] < q / 1.0001 else (
            up if seen.get(up, math.inf) < seen.get(dn, math.inf) else dn)  # fmt: skip
        designs = {"probe": {f"{q:.4g}": None}}
        for to, r in row["rungs"].items():
            for name, cands in (("k2", [f"{q:.4g}", lean]), ("k3", [f"{q:.4g}", up, dn])):
                losses = {c: row["losses"][c][to] for c in cands if c in row["losses"]}
                top = min(losses, key=lambda c: losses[c]) if losses else None
                designs[f"{name}@{r['frac']:.2f}"] = {top: None} if top else {}
        for name, d in designs.items():
            c = counts.setdefault(name, {})
            c[group] = c.get(group, 0) + ok(next(iter(d), None))
            c[f"{group} n"] = c.get(f"{group} n", 0) + 1
    return counts


def main() -> None:
    from tasks import TASKS

    ap = argparse.ArgumentParser()
    ap.add_argument("--report", help="a JSON of this script: the simulated duels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probes", nargs=2, metavar=("FILE", "ARM"),
                    default=["docs/results/auto_lr_v62_5seeds.json", "auto"])  # fmt: skip
    ap.add_argument("--pairs", nargs="+", default=None)
    ap.add_argument("--grid", help="the suite's JSON with the grid runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fracs", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--around", type=int, default=2, help="lattice steps each side of the best")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.report:
        for name, c in sorted(report(args.report, args.seed, *args.probes).items()):
            print(f"{name:10s}", c)
        return
    pairs = args.pairs or [p for p, t in TASKS.items()
                           if not t.fine_tune and not p.startswith("fashion-cnn")]  # fmt: skip
    jobs = [(p, s, args.grid, args.fracs, args.around) for p in pairs for s in args.seeds]
    out_path = Path(args.json)
    done = json.loads(out_path.read_text()) if out_path.is_file() else []
    have = {(r["pair"], r["seed"]) for r in done}
    jobs = [j for j in jobs if (j[0], j[1]) not in have]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for r in pool.imap_unordered(one, jobs):
            done.append(r)
            out_path.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
