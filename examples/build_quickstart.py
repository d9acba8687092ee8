"""Write examples/quickstart.ipynb from docs/getting-started.md: one markdown cell per
stretch of prose, one code cell per ``python`` block (the other blocks stay in the prose).
The notebook is committed without outputs; ``tests/test_notebooks.py`` runs it top to
bottom in a real kernel and checks it matches the page.

    .venv/bin/python examples/build_quickstart.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "getting-started.md"
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def cells(markdown: str) -> list[dict]:
    """The page as notebook cells (nbformat 4, no outputs)."""
    out: list[dict] = []
    prose: list[str] = []
    code: list[str] | None = None

    def cell(kind: str, lines: list[str]) -> None:
        text = "\n".join(lines).strip("\n")
        if not text:
            return
        c = {"cell_type": kind, "id": f"cell-{len(out)}", "metadata": {}, "source": text}
        if kind == "code":
            c.update(execution_count=None, outputs=[])
        out.append(c)

    for line in markdown.splitlines():
        if code is not None:
            if line.startswith("```"):
                cell("code", code)
                code = None
            else:
                code.append(line)
        elif line.strip() == "```python":
            cell("markdown", prose)
            prose, code = [], []
        else:
            prose.append(line)
    cell("markdown", prose)
    return out


def notebook() -> dict:
    return {
        "cells": cells(PAGE.read_text()),
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


if __name__ == "__main__":
    NOTEBOOK.write_text(json.dumps(notebook(), indent=1) + "\n")
    print(f"wrote {NOTEBOOK.relative_to(ROOT)}")
