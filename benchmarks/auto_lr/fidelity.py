"""How long must a probe be to rank 1cycle peaks as the full runs do?

For each pair and seed: a probe (``onecycle.probes.probe``: a compressed 1cycle scored on
held-back training batches) at every grid LR within a decade of the grid's best, at a
few fractions of the run's steps. The full runs' scores come from the suite's JSON
(``--grid``), so nothing here re-trains the grid. Per fraction, the output says which LR
the probes rank first and its regret: the full-run score lost by training at it instead
of the grid's best.

This reads pairs that earlier rules were evaluated on; a rule designed from its output
must be quoted on pairs it never saw (tasks.py declares them).

    .venv/bin/python benchmarks/auto_lr/fidelity.py --pairs mnist1d-gru-adamw \\
        --grid docs/results/auto_lr_suite.json --json runs/fidelity.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


@functools.cache
def suite_runs(path: str) -> list[dict]:
    """The ``runs`` of a suite's JSON, read once per path (callers only read them)."""
    return json.loads(Path(path).read_text())["runs"]


def grid_means(path: str, pair: str) -> dict[float, float | None]:
    runs = suite_runs(path)
    by: dict[float, list[float | None]] = {}
    for r in runs:
        if r["pair"] == pair and r["arm"] == "grid":
            by.setdefault(round(float(r["param"]), 8), []).append(r["score"])
    return {
        lr: (None if any(s is None for s in v) else statistics.fmean(v))  # type: ignore[misc]
        for lr, v in by.items()
    }


def main() -> None:
    import arms
    import torch
    from tasks import TASKS

    from onecycle.probes import probe

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", nargs="+", required=True)
    ap.add_argument("--grid", required=True, help="the suite's JSON with the grid runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--fracs", type=float, nargs="+", default=[0.04, 0.08, 0.16])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out_path = Path(args.json)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for pair in args.pairs:
        task = TASKS[pair]
        sign = 1 if task.higher_is_better else -1
        grid = grid_means(args.grid, pair)
        ok = {lr: s for lr, s in grid.items() if s is not None}
        best = max(ok, key=lambda lr: sign * ok[lr])
        lrs = [lr for lr in sorted(grid) if best / 10.01 <= lr <= best * 10.01]
        for seed in args.seeds:
            b = task.build(seed, args.device, False)
            learn = arms._learner(task, b, args.device)
            total = arms._steps(task, learn)
            rows = {}
            for frac in args.fracs:
                n = max(4, round(frac * total))
                losses = {lr: probe(learn, lr, n).loss for lr in lrs}
                top = min(lrs, key=lambda lr: losses[lr])
                full = grid[top]
                regret = None if full is None else sign * (ok[best] - full)
                rows[f"{frac:g}"] = {"steps": n, "losses": {f"{k:.4g}": v for k, v in
                                     losses.items()}, "top": top, "regret": regret}  # fmt: skip
                print(pair, seed, frac, n, f"top={top:.4g}", f"best={best:.4g}",
                      f"regret={regret}", {f"{k:.3g}": round(v, 3) if math.isfinite(v) else v
                                           for k, v in losses.items()}, flush=True)  # fmt: skip
            out[f"{pair}/{seed}"] = {"total_steps": total, "grid_best": best,
                                     "grid": {f"{k:.4g}": v for k, v in grid.items()},
                                     "fracs": rows}  # fmt: skip
            out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
