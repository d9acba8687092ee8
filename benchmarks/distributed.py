"""One process against two (torchrun, gloo, CPU): seconds per epoch and final accuracy.

The same ``onecycle fit`` command three ways, alternating, ``--repeats`` times:

- ``1 proc``: one process, batch B, torch using ``--threads`` threads (default 2, the
  whole machine);
- ``2 procs, same global batch``: ``torchrun --nproc_per_node=2``, batch B/2 per process
  (one thread each): the same optimization as ``1 proc``, up to float rounding;
- ``2 procs, 2x batch``: B per process (global 2B, half the steps), lr_max doubled
  (the linear scaling rule).

    .venv/bin/python benchmarks/distributed.py --dataset mnist1d --epochs 10 --repeats 3 \\
        --json docs/results/distributed_mnist1d.json
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

from onecycle.run import RECIPES


def run(dataset: str, epochs: int, nproc: int, bs: int, lr: float, threads: int,
        extra: list[str]) -> dict:  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    args = ["-m", "onecycle", "fit", "--dataset", dataset, "--epochs", str(epochs),
            "--bs", str(bs), "--lr-max", str(lr), "--no-progress", "--out", str(out),
            *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *args]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    per_epoch = [r["seconds"] for r in m["epochs"]]
    return {
        "epoch_seconds_median": statistics.median(per_epoch[1:] or per_epoch),
        "train_seconds": m["final"]["train_seconds"],
        "test_accuracy": m["final"]["test_accuracy"],
        "optimizer_steps": m["final"]["optimizer_steps"],
        "world_size": m.get("world_size", 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist1d", choices=list(RECIPES))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads of the 1-process run")
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    recipe = RECIPES[a.dataset]
    bs, lr = recipe["bs"], recipe["lr_max"]
    extra = ["--train-samples", str(a.train_samples)] if a.train_samples else []
    setups = {
        "1 proc": (1, bs, lr, a.threads),
        "2 procs, same global batch": (2, bs // 2, lr, 1),
        "2 procs, 2x batch, 2x lr": (2, bs, 2 * lr, 1),
    }
    results: dict[str, list[dict]] = {k: [] for k in setups}
    for rep in range(a.repeats):
        for name, (n, b, lr_, th) in setups.items():
            r = run(a.dataset, a.epochs, n, b, lr_, th, extra)
            results[name].append(r)
            print(f"rep {rep} {name:<28} {r['epoch_seconds_median']:.2f} s/epoch, "
                  f"acc {r['test_accuracy']:.4f}, {r['optimizer_steps']} steps",
                  flush=True)  # fmt: skip
    summary = {}
    base = statistics.median(r["epoch_seconds_median"] for r in results["1 proc"])
    for name, rs in results.items():
        sec = statistics.median(r["epoch_seconds_median"] for r in rs)
        accs = [r["test_accuracy"] for r in rs]
        summary[name] = {
            "epoch_seconds": sec, "speedup_vs_1proc": base / sec,
            "accuracy_mean": statistics.mean(accs), "accuracy_min": min(accs),
            "accuracy_max": max(accs), "optimizer_steps": rs[0]["optimizer_steps"],
        }  # fmt: skip
        print(f"{name:<28} {sec:.2f} s/epoch ({base / sec:.2f}x), accuracy "
              f"{statistics.mean(accs):.4f} [{min(accs):.4f}, {max(accs):.4f}]")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({
            "args": vars(a), "recipe": recipe, "summary": summary, "runs": results,
            "cpus": os.cpu_count(),
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
