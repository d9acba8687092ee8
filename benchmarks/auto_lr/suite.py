"""The lr_max="auto" suite, its one entry point: every pair x every arm, same model, data
and budget, into a JSON and a table; and the steps that read those JSONs.

    suite.py [run] [options]      train: the grid, auto and the other arms (the default)
    suite.py merge IN... --json J --table T   several runs' JSONs into one
    suite.py report SUITE [--table T] [--plot P]   the v6 report: auto at three budgets
    suite.py yardstick --suite SUITE   the grid's best LR re-run at fresh seeds

For example (``suite.py SUBCOMMAND --help`` lists each one's options):

    .venv/bin/python benchmarks/auto_lr/suite.py --quick --json runs/auto_quick.json
    .venv/bin/python benchmarks/auto_lr/suite.py --device cuda --workers 8 \\
        --json docs/results/auto_lr_suite.json --table docs/results/auto_lr_suite.md
    .venv/bin/python benchmarks/auto_lr/suite.py merge runs/a.json runs/b.json \\
        --json runs/merged.json --table runs/merged.md
    .venv/bin/python benchmarks/auto_lr/suite.py report runs/merged.json \\
        --table runs/report.md --plot runs/budget.png

``run``, per pair: the grid (1cycle at ``grid_lo * sqrt(10)**k``, k = 0..8, ``--seeds``
seeds), ``auto`` over ``--auto-seeds`` seeds (its accuracy, the spread of its picks, its
compute ratio), ``auto_wd`` and the weight-decay grid {0, 1e-5, 1e-4, 1e-3, 1e-2} at the
grid's best LR, and the alternatives of ``arms.ALTERNATIVES`` whose packages import
(optional extras: prodigyopt, schedulefree, dadaptation, torch-lr-finder; never test
dependencies). Seeds change the initial weights and the data order; seed s of every arm
shares them. The pairs are in ``tasks.py``, the arms in ``arms.py``, and the summaries,
tables and plot in ``report.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

WDS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)


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


def _results(jobs: list[tuple], workers: int) -> Iterator[dict[str, Any]]:
    """Each job's result as it finishes: in a pool of ``workers`` processes, or here."""
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap_unordered(_job, jobs)
    else:
        yield from map(_job, jobs)


def _partial(args: argparse.Namespace, results: list[dict[str, Any]], t0: float) -> None:
    """With ``--only``: the runs so far, after each one (``<json>.partial``), so that a
    suite stopped early keeps what it measured."""
    if args.only and args.json:
        Path(args.json + ".partial").write_text(json.dumps(
            {"args": vars(args), "runs": results, "seconds": time.perf_counter() - t0},
            default=str))  # fmt: skip


def run(argv: list[str]) -> None:
    from report import summarise, table

    ap = argparse.ArgumentParser(
        prog="suite.py [run]", description="Train every pair x every arm; JSON + table.",
        epilog="Other subcommands: merge, report, yardstick (suite.py SUBCOMMAND --help).",
    )  # fmt: skip
    ap.add_argument("--pairs", nargs="*", default=None)
    ap.add_argument("--quick", action="store_true", help="two tiny pairs, grid + auto only")
    ap.add_argument("--all-arms", action="store_true", help="with --quick: every arm")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--auto-seeds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--skip", nargs="*", default=[], help="arms to leave out")
    ap.add_argument("--only", nargs="*", default=[],
                    help="run just these arms (needs --json; merge the result with a run "
                         "that has the grid)")  # fmt: skip
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
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.auto_seeds = 1, 1
    try:
        args.grid_best = {p: float(v) for p, v in (x.split("=") for x in args.grid_best)}
    except ValueError:
        ap.error("--grid-best: give PAIR=LR, e.g. fashion-cnn-sgd=0.1")
    if args.only and not args.json:
        ap.error("--only needs --json")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    grid_best: dict[str, float] = {}
    keys = ("pair", "arm", "param", "seed", "lr", "score", "error")
    for phase in (0, 1):
        for r in _results(plan(args, phase, grid_best), args.workers):
            results.append(r)
            print(json.dumps({k: r.get(k) for k in keys}), flush=True)
            _partial(args, results, t0)
        if phase == 0 and not args.only:
            grid_best = {p: v["grid_best"]["lr"] for p, v in summarise(results).items()}
    if args.only:  # no grid to compare with: `merge` combines this with a full run
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results,
                                               "seconds": time.perf_counter() - t0,
                                               "torch": __import__("torch").__version__},
                                              indent=1, default=str))  # fmt: skip
        return
    summary = summarise(results)
    out = {"args": vars(args), "seconds": time.perf_counter() - t0,
           "torch": __import__("torch").__version__, "summary": summary,
           "runs": results}  # fmt: skip
    text = table(summary)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if args.table:
        Path(args.table).write_text(text)


def merge(argv: list[str]) -> None:
    import report

    ap = argparse.ArgumentParser(
        prog="suite.py merge",
        description="Merge suite runs (e.g. the small pairs and the Fashion-MNIST pairs, run "
        "separately, or an --only re-run and the run with the grid) into one JSON and one "
        "table. A run of a later file replaces the run of an earlier one with the same "
        "pair, arm, seed and parameter; other seeds are added.",
    )
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--json", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--legacy", type=int, default=0, metavar="K",
                    help="the first K inputs ran an earlier rule: their arm 'auto' becomes "
                         "--legacy-name, a column beside the current 'auto'")  # fmt: skip
    ap.add_argument("--legacy-name", default="auto_v3")
    args = ap.parse_args(argv)
    merged = report.merge(args.inputs, args.legacy, args.legacy_name)
    text = report.table(merged["summary"])
    Path(args.json).write_text(json.dumps(merged, indent=0, default=str))
    Path(args.table).write_text(text)
    print(text)


def report_(argv: list[str]) -> None:
    import report

    ap = argparse.ArgumentParser(
        prog="suite.py report",
        description="The v6 report of a (merged) suite JSON: every pair x the auto arms "
        "(auto_b0.1, auto, auto_b1: budgets 0.1 / 0.3 / 1.0; auto_v5 where it ran) and the "
        "learning-rate-free arms, the counts per group, and the budget curve.",
    )
    ap.add_argument("suite", help="a merged suite JSON (suite.py merge)")
    ap.add_argument(
        "--counts",
        action="store_true",
        help="SUITE holds counts already ({'groups': ..., 'pairs': {}}): plot them",
    )
    ap.add_argument("--table", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--arm", default="auto",
                    help="the auto arm whose picks, spread and schedule-free comparison the "
                    "table and counts show (default auto: the default budget)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.counts:
        if not args.plot:
            ap.error("--counts needs --plot")
        report.plot(json.loads(Path(args.suite).read_text()), args.plot)
        return
    summary = json.loads(Path(args.suite).read_text())["summary"]
    rep = report.counts(summary, args.arm)
    text = report.counts_table(rep, summary)
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    if args.plot:
        report.plot(rep, args.plot)


def yardstick(argv: list[str]) -> None:
    import report
    from tasks import TASKS

    ap = argparse.ArgumentParser(
        prog="suite.py yardstick",
        description="A noise-aware yardstick: the suite's 'grid best' is the best of nine "
        "2-seed means, biased in the grid's favour. The LR it selected is trained again at "
        "seeds that played no part in selecting it (default 2, 3, 4) and compared with "
        "auto's runs of the suite at the same seeds (run auto at seeds 0-4).",
    )
    ap.add_argument("--suite", required=True, help="a suite JSON (grid and auto runs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="pairs to leave out (Fashion-MNIST's CNNs: ~3 minutes a run)",
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reuse", nargs="*", default=[],
                    help="earlier yardstick JSONs: their fresh runs (same pair, LR, seed) "
                         "are taken instead of run again")  # fmt: skip
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None)
    args = ap.parse_args(argv)
    data = json.loads(Path(args.suite).read_text())
    summary, runs = data["summary"], data["runs"]
    pairs = [p for p in summary if p not in args.skip and p in TASKS]
    jobs = [(p, "grid", summary[p]["grid_best"]["lr"], s, "cpu", False, 1)
            for p in pairs for s in args.seeds]  # fmt: skip
    done = {(r["pair"], round(r["param"], 9), r["seed"]): r
            for f in args.reuse for r in json.loads(Path(f).read_text())["fresh_runs"]}  # fmt: skip
    fresh = [done[k] for j in jobs if (k := (j[0], round(j[2], 9), j[3])) in done]
    jobs = [j for j in jobs if (j[0], round(j[2], 9), j[3]) not in done]
    fresh += list(_results(jobs, args.workers))
    rows = report.yardstick_rows(summary, runs, fresh, pairs, args.seeds)
    text = report.yardstick_table(rows, args.seeds)
    print(text)
    if args.json:
        out = {"args": vars(args), "rows": rows, "fresh_runs": fresh}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if args.table:
        Path(args.table).write_text(text)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "run": run, "merge": merge, "report": report_, "yardstick": yardstick,
}  # fmt: skip


def main(argv: list[str]) -> None:
    """``suite.py SUBCOMMAND ...``; with no subcommand, ``run`` (``suite.py --quick``)."""
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
    else:
        run(argv)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # torch-lr-finder's progress bar
    main(sys.argv[1:])
