"""Print the measurements of docs/results/fast_recipe_explore.json as markdown tables.

.venv/bin/python benchmarks/fast_recipe/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

PATH = Path(__file__).resolve().parents[2] / "docs" / "results" / "fast_recipe_explore.json"


def main() -> None:
    d = json.loads(PATH.read_text())
    print("## Fashion-MNIST (1 thread; E measured in the same process)\n")
    print(
        "| round | recipe (overrides of BASE) | seed | test acc | s | s/E | E | img/s "
        "| acc per epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in d.get("fashion", {}).items():
        tag, recipe, _ = key.split("|")
        per = " ".join(f"{a:.4f}" for a in r["acc_per_epoch"])
        print(f"| {tag} | `{recipe}` | {r['seed']} | {r['test_accuracy']:.4f} | "
              f"{r['seconds']:.1f} | {r['seconds_over_E']:.2f} | {r['E']:.1f} | "
              f"{r['images_per_s']:.0f} | {per} |")  # fmt: skip
    print("\nE re-measured at the end of a process:", json.dumps(d.get("E_checks", {})))
    print("\n## Throughput (train steps, img/s)\n")
    print("| model | bs | channels_last | bf16 | img/s | epoch s | params |")
    print("|---|---|---|---|---|---|---|")
    for _, r in d.get("throughput", {}).items():
        print(f"| {r['model']}{r['widths'] or ''} | {r['bs']} | {int(r['channels_last'])} | "
              f"{int(r['bf16'])} | {r['images_per_s']:.0f} | {r['est_epoch_s']:.1f} | "
              f"{r['params']} |")  # fmt: skip
    print("\n## MNIST-1D (1 thread; seconds = training + test evaluation)\n")
    print("| round | recipe (overrides of BASE1D) | seed | test acc | s | params |")
    print("|---|---|---|---|---|---|")
    for key, r in d.get("mnist1d", {}).items():
        tag, recipe, _ = key.split("|")
        print(f"| {tag} | `{recipe}` | {r['seed']} | {r['test_accuracy']:.4f} | "
              f"{r['seconds']:.1f} | {r['params']} |")  # fmt: skip


if __name__ == "__main__":
    main()
