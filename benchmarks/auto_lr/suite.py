"""The lr_max="auto" suite: every pair x every arm, same model, data and budget; JSON + table.

    .venv/bin/python benchmarks/auto_lr/suite.py --quick --json runs/auto_quick.json
    .venv/bin/python benchmarks/auto_lr/suite.py --device cuda --workers 8 \\
        --json docs/results/auto_lr_suite.json --table docs/results/auto_lr_suite.md

Per pair: the grid (1cycle at ``grid_lo * sqrt(10)**k``, k = 0..8, ``--seeds`` seeds),
``auto`` over ``--auto-seeds`` seeds (its accuracy, the spread of its picks, its compute
ratio), ``auto_wd`` and the weight-decay grid {0, 1e-5, 1e-4, 1e-3, 1e-2} at the grid's
best LR, and the alternatives of ``arms.ALTERNATIVES`` whose packages import (optional
extras: prodigyopt, schedulefree, dadaptation, torch-lr-finder; never test dependencies).
Seeds change the initial weights and the data order; seed s of every arm shares them.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

WDS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
LR_FREE = ("prodigy_cos", "prodigy_probe", "sf_adamw", "sf_adamw_10x", "sf_sgd", "dadapt_adam")


def beats_lr_free(sign: int, arms: dict[str, Any]) -> dict[str, bool] | None:
    """Per learning-rate-free arm that ran: does auto beat or tie it? A tie is a gap
    within the larger of the two arms' seed-to-seed standard deviations."""
    auto = arms.get("auto")
    if not auto or auto["mean"] is None:
        return None
    out = {}
    for name in LR_FREE:
        other = arms.get(name)
        if not other or other["n"] == 0 or (other.get("errors") and other["mean"] is None):
            continue
        if other["mean"] is None:  # it failed on some seed: auto beats it
            out[name] = True
            continue
        noise = max(auto["sd"], other["sd"])
        out[name] = sign * (auto["mean"] - other["mean"]) >= -noise
    return out


def _job(job: tuple[str, str, Any, int, str, bool, int]) -> dict[str, Any]:
    import arms
    import torch
    from tasks import TASKS

    pair, arm, param, seed, device, quick, threads = job
    torch.set_num_threads(threads)
    task = TASKS[pair]
    if quick:
        import dataclasses

        task = dataclasses.replace(task, epochs=max(1, task.epochs // 3))

    def make() -> Any:
        return task.build(seed, device, quick)

    t0 = time.perf_counter()
    try:
        if arm == "grid":
            r = arms.run_grid(task, make, device, param)
        elif arm == "auto":
            r = arms.run_auto(task, make, device)
        elif arm.startswith("auto_b"):  # auto_b0.1, auto_b1: lr_max="auto" at that budget
            r = arms.run_auto(task, make, device, budget=float(arm[len("auto_b") :]))
        elif arm == "auto_wd":
            r = arms.run_auto(task, make, device, wd_auto=True)
        elif arm == "wd":
            r = arms.run_wd(task, make, device, param[0], param[1])
        else:
            r = arms.ALTERNATIVES[arm](task, make, device)
    except ImportError as e:
        r = {"score": None, "skipped": str(e)}
    except Exception as e:  # one arm's failure is a result of the suite, not its end
        r = {"score": None, "error": f"{type(e).__name__}: {e}"}
    if r.get("score") is not None and not math.isfinite(r["score"]):
        r["score"] = None
        r["error"] = "non-finite final metric"
    r.update(pair=pair, arm=arm, param=param, seed=seed, seconds=time.perf_counter() - t0)
    return r


def _available(arm: str) -> bool:
    mods = {"tlrf_steep": "torch_lr_finder", "prodigy_cos": "prodigyopt",
            "prodigy_probe": "prodigyopt", "sf_adamw": "schedulefree",
            "sf_adamw_10x": "schedulefree", "sf_sgd": "schedulefree",
            "dadapt_adam": "dadaptation", "lightning_tuner": "lightning"}  # fmt: skip
    if arm not in mods:
        return True
    import importlib.util

    return importlib.util.find_spec(mods[arm]) is not None


def plan(args: argparse.Namespace, phase: int, grid_best: dict[str, float]) -> list[tuple]:
    from arms import ALTERNATIVES
    from tasks import QUICK, TASKS

    pairs = args.pairs or (list(QUICK) if args.quick else list(TASKS))
    jobs = []
    for pair in pairs:
        task = TASKS[pair]
        common = (args.device, args.quick, args.threads)
        if args.only:  # these arms alone (e.g. auto after a change of the rule)
            if phase == 0:
                for arm in args.only:
                    n = args.auto_seeds if arm.startswith("auto") else args.seeds
                    first = args.first_seed
                    seeds = range(first, first + n)
                    if arm == "wd":  # the weight-decay grid at the LR given by --grid-best
                        if pair not in args.grid_best:
                            sys.exit(f"--only wd needs --grid-best {pair}=LR")
                        lr = args.grid_best[pair]
                        jobs += [(pair, arm, (lr, wd), s, *common) for wd in WDS for s in seeds]
                    else:
                        jobs += [(pair, arm, None, s, *common) for s in seeds]
            continue
        if phase == 0:
            grid = task.grid()[::2] if args.quick else task.grid()
            for lr in grid:
                for s in range(args.seeds):
                    jobs.append((pair, "grid", lr, s, *common))
            for s in range(args.auto_seeds):
                jobs.append((pair, "auto", None, s, *common))
            if args.quick and not args.all_arms:
                continue
            for arm in ALTERNATIVES:
                if arm in args.skip or not _available(arm):
                    continue
                for s in range(args.seeds):
                    jobs.append((pair, arm, None, s, *common))
            if "auto_wd" not in args.skip:
                for s in range(args.seeds):
                    jobs.append((pair, "auto_wd", None, s, *common))
        elif phase == 1 and (args.all_arms or not args.quick) and "wd" not in args.skip:
            for wd in WDS:
                for s in range(args.seeds):
                    jobs.append((pair, "wd", (grid_best[pair], wd), s, *common))
    # longest pairs first keeps the pool busy to the end
    return sorted(jobs, key=lambda j: (TASKS[j[0]].epochs * (1 if "mnist1d" in j[0] else 5)),
                  reverse=True)  # fmt: skip


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    from tasks import TASKS

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
            gap = None if mean is None else sign * (best - mean)
            if gap is not None and task.metric != "accuracy":
                gap = 100 * gap / abs(best)  # relative, in %
            arms_out[arm] = {
                "mean": mean, "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "n": len(rs), "failed": failed, "gap": gap,
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


def table(summary: dict[str, Any]) -> str:
    arm_names = list(dict.fromkeys(a for p in summary.values() for a in p["arms"]))
    lines = []
    for group in ("held out v6", "held out", "seen", "calibration"):
        lines.append(f"\n**{group}** (gap to the grid's best: accuracy points, or % of "
                     "bits/char or MSE; positive = worse than the grid)\n")  # fmt: skip
        lines.append("| pair | grid best | " + " | ".join(arm_names) + " |")
        lines.append("|---" * (len(arm_names) + 2) + "|")
        for pair, p in summary.items():
            if p.get("group", "calibration" if p["calibration"] else "held out") != group:
                continue
            cells = []
            for a in arm_names:
                r = p["arms"].get(a)
                if r is None or r["n"] == 0:
                    cells.append("–")
                elif r["mean"] is None:
                    cells.append(f"failed {r['failed']}/{r['n']}")
                else:
                    cells.append(f"{r['mean']:.4g} ({r['gap']:+.2f})")
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


def _partial(args: argparse.Namespace, results: list[dict[str, Any]], t0: float) -> None:
    """With ``--only``: the runs so far, after each one (``<json>.partial``), so that a
    suite stopped early keeps what it measured."""
    if args.only and args.json:
        Path(args.json + ".partial").write_text(json.dumps(
            {"args": vars(args), "runs": results, "seconds": time.perf_counter() - t0},
            default=str))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="*", default=None)
    ap.add_argument("--quick", action="store_true", help="two tiny pairs, grid + auto only")
    ap.add_argument("--all-arms", action="store_true", help="with --quick: every arm")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--auto-seeds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--skip", nargs="*", default=[], help="arms to leave out")
    ap.add_argument("--only", nargs="*", default=[], help="run just these arms (needs --json)")
    ap.add_argument("--first-seed", type=int, default=0, help="with --only: seeds from here")
    ap.add_argument(
        "--grid-best",
        nargs="*",
        default=[],
        metavar="PAIR=LR",
        help="with --only wd: the grid's best lr_max of each pair",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.auto_seeds = 1, 1
    try:
        args.grid_best = {p: float(v) for p, v in (x.split("=") for x in args.grid_best)}
    except ValueError:
        ap.error("--grid-best: give PAIR=LR, e.g. fashion-cnn-sgd=0.1")
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    grid_best: dict[str, float] = {}
    for phase in (0, 1):
        jobs = plan(args, phase, grid_best)
        if args.workers > 1:
            with mp.get_context("spawn").Pool(args.workers) as pool:
                for r in pool.imap_unordered(_job, jobs):
                    results.append(r)
                    _partial(args, results, t0)
                    print(json.dumps({k: r.get(k) for k in ("pair", "arm", "param", "seed",
                                                            "lr", "score", "error")}),
                          flush=True)  # fmt: skip
        else:
            for j in jobs:
                r = _job(j)
                results.append(r)
                keys = ("pair", "arm", "param", "seed", "lr", "score", "error")
                print(json.dumps({k: r.get(k) for k in keys}), flush=True)
                _partial(args, results, t0)
        if phase == 0 and not args.only:
            grid_best = {p: v["grid_best"]["lr"] for p, v in summarise(results).items()}
    if args.only:  # no grid to compare with: merge.py combines this with a full run
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results,
                                               "seconds": time.perf_counter() - t0,
                                               "torch": __import__("torch").__version__},
                                              indent=1, default=str))  # fmt: skip
        return
    summary = summarise(results)
    report = {"args": vars(args), "seconds": time.perf_counter() - t0,
              "torch": __import__("torch").__version__, "summary": summary,
              "runs": results}  # fmt: skip
    text = table(summary)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    if args.table:
        Path(args.table).write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # torch-lr-finder's progress bar
    main()
