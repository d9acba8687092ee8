"""``benchmarks/overhead.py`` on two source trees of onecycle, alternately, in one run.

For a change that must not cost speed (a refactor): the same benchmark, the same
interpreter and machine, the library imported from the ``--base`` commit (extracted with
``git archive``) and from the working tree in alternating processes (A B B A ...), so
machine noise hits both alike. Reports each tree's Learner / hand-written ratio (median
over rounds) and the head / base ratio of the Learner's median epoch time.

    .venv/bin/python benchmarks/overhead_ab.py --base HEAD~1 --rounds 10 \\
        --dataset mnist1d --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LEARNER = "onecycle Learner"


def run_once(src: str, bench_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "overhead.json"
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
        code = "import onecycle, sys; print(onecycle.__file__)"
        where = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
        if not where.startswith(str(Path(src).resolve())):
            raise SystemExit(f"--base/--head {src}: onecycle was imported from {where}")
        subprocess.run([sys.executable, str(HERE / "overhead.py"), *bench_args, "--json",
                        str(out)], env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git commit before the change (e.g. HEAD~1)")
    ap.add_argument("--head", default=str(ROOT / "src"), help="src folder after the change "
                    "(default: this working tree's)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each tree")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "fashion-mnist"])
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3, help="overhead.py: epochs per run")
    ap.add_argument("--repeats", type=int, default=5, help="overhead.py: runs of each loop")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bench = ["--dataset", args.dataset, "--epochs", str(args.epochs), "--repeats",
             str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
    if args.train_samples:
        bench += ["--train-samples", str(args.train_samples)]
    tmp = tempfile.TemporaryDirectory()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "src"],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
    trees = {"base": str(Path(tmp.name) / "src"), "head": args.head}
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    for r in range(args.rounds):
        for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
            res = run_once(trees[name], bench)
            runs[name].append(res)
            print(f"round {r + 1} {name}: Learner / hand-written "
                  f"{res['ratio_to_hand_written'][LEARNER]:.3f}", flush=True)  # fmt: skip
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "ratio_to_hand_written": statistics.median(
                x["ratio_to_hand_written"][LEARNER] for x in rs),
            "learner_epoch_seconds": statistics.median(
                x["median_epoch_seconds"][LEARNER] for x in rs),
            "per_round": [x["ratio_to_hand_written"][LEARNER] for x in rs],
        }  # fmt: skip
    result = {
        "bench_args": bench, "rounds": args.rounds, "trees": {"base": args.base, "head": args.head},
        "summary": summary,
        "head_over_base_learner_epoch": summary["head"]["learner_epoch_seconds"]
        / summary["base"]["learner_epoch_seconds"],
        "runs": runs,
    }  # fmt: skip
    print(json.dumps({k: result[k] for k in ("summary", "head_over_base_learner_epoch")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
