"""Where a person is watching, and a fit's progress as a notebook shows it.

``watching()`` says where ``ProgressBar`` (``onecycle.callbacks``) should show progress by
default: ``"notebook"`` inside a Jupyter kernel, ``"terminal"`` when stderr is a terminal,
None in pipes, files and CI (``CI`` set), where a fit stays silent. ``NotebookView`` is
the notebook's own display: an HTML progress bar and the per-epoch table, updated in
place (``IPython.display``; no widgets needed). IPython is never imported here: it is
read from ``sys.modules``, where a kernel has it already.

Only the standard library is imported here.
"""

from __future__ import annotations

import html
import os
import sys
import time
from typing import Any, Literal

__all__ = ["NotebookView", "in_notebook", "watching"]

Where = Literal["notebook", "terminal"]


def in_notebook() -> bool:
    """Inside a Jupyter kernel (IPython's ``ZMQInteractiveShell``)?"""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return type(shell).__name__ == "ZMQInteractiveShell"


def watching() -> Where | None:
    """Where a person watches this process's progress: a notebook, a terminal, or None
    (pipes, files, CI: ``CI`` set to anything but ``""``, ``0`` or ``false``)."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        return None
    if in_notebook():
        return "notebook"
    try:
        return "terminal" if sys.stderr is not None and sys.stderr.isatty() else None
    except (AttributeError, ValueError):  # a closed or replaced stream
        return None


def _cell(v: Any) -> str:
    return str(v) if isinstance(v, (int, str)) else f"{v:.4f}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


class NotebookView:
    """A fit's progress in a notebook cell: a bar for the epoch under way and the table of
    finished epochs, one display updated in place (at most every ``every`` seconds while
    batches run)."""

    def __init__(self, every: float = 0.2) -> None:
        from IPython.display import HTML, display  # a kernel has it: see in_notebook

        self._html, self.every = HTML, every
        self.rows: list[dict[str, Any]] = []
        self._bar = ""
        self._last = 0.0
        self._handle = display(HTML(""), display_id=True)

    def batch(self, done: int, total: int, what: str, started: float) -> None:
        """``done`` of ``total`` batches of the epoch ``what`` (its label), begun at
        ``started`` (``time.perf_counter``)."""
        now = time.perf_counter()
        if done < total and now - self._last < self.every:
            return
        self._last = now
        spent = now - started
        left = spent / done * (total - done) if done else 0.0
        self._bar = (f'<div><progress value="{done}" max="{total}" style="width:300px">'
                     f"</progress> {html.escape(what)}: {done}/{total} "
                     f"[{_clock(spent)}&lt;{_clock(left)}]</div>")  # fmt: skip
        self._show()

    def epoch(self, row: dict[str, Any]) -> None:
        """A finished epoch's row of the table."""
        self.rows.append(dict(row))
        self._bar = ""
        self._show()

    def close(self) -> None:
        self._bar = ""
        self._show()

    def _show(self) -> None:
        table = ""
        if self.rows:
            keys = list(dict.fromkeys(k for r in self.rows for k in r))
            head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
            body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k, ''))}</td>" for k in keys)
                           + "</tr>" for r in self.rows)  # fmt: skip
            table = f"<table><tr>{head}</tr>{body}</table>"
        self._handle.update(self._html(self._bar + table))
