"""Merge suite runs (e.g. the small pairs and the Fashion-MNIST pairs, run separately) into
one JSON and one table; the sweep curves are dropped (the probes and picks are kept). The
runs of a (pair, arm) in a later file replace those of an earlier one (``--only``).

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
    args = ap.parse_args()
    runs: list[dict] = []
    parts = []
    for path in args.inputs:  # a later file's (pair, arm) runs replace an earlier file's
        d = json.loads(Path(path).read_text())
        parts.append({"file": path, "args": d["args"], "seconds": d["seconds"],
                      "torch": d["torch"]})  # fmt: skip
        new = {(r["pair"], r["arm"]) for r in d["runs"]}
        runs = [r for r in runs if (r["pair"], r["arm"]) not in new]
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
