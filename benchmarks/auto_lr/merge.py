"""Merge suite runs (e.g. the small pairs and the Fashion-MNIST pairs, run separately) into
one JSON and one table; the sweep curves are dropped (the probes and picks are kept). A run
of a later file replaces the run of an earlier one with the same pair, arm, seed and
parameter (``--only`` re-runs); other seeds are added.

    .venv/bin/python benchmarks/auto_lr/merge.py runs/suite/small.json runs/suite/fashion.json \\
        --json docs/results/auto_lr_suite.json --table docs/results/auto_lr_suite.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from suite import summarise, table

    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--json", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--legacy", type=int, default=0, metavar="K",
                    help="the first K inputs ran an earlier rule: their arm 'auto' becomes "
                         "--legacy-name, a column beside the current 'auto'")  # fmt: skip
    ap.add_argument("--legacy-name", default="auto_v3")
    args = ap.parse_args()
    runs: list[dict] = []
    parts = []

    def key(r: dict) -> tuple:
        return r["pair"], r["arm"], r["seed"], json.dumps(r["param"])

    for i, path in enumerate(args.inputs):  # a later file's run replaces an earlier one
        d = json.loads(Path(path).read_text())
        if i < args.legacy:
            for r in d["runs"]:
                if r["arm"] == "auto":
                    r["arm"] = args.legacy_name
        if "parts" in d:  # an earlier merge: its parts, then its runs
            parts.extend(d["parts"])
        else:
            parts.append({"file": path, "args": d["args"], "seconds": d["seconds"],
                          "torch": d["torch"]})  # fmt: skip
        new = {key(r) for r in d["runs"]}
        runs = [r for r in runs if key(r) not in new]
        for r in d["runs"]:
            r.pop("sweep", None)
            runs.append(r)
    summary = summarise(runs)
    text = table(summary)
    Path(args.json).write_text(json.dumps({"parts": parts, "summary": summary, "runs": runs},
                                          indent=0, default=str))  # fmt: skip
    Path(args.table).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
