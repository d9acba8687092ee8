"""Small inline SVG pictures for notebooks, in pure Python: a schedule's shape, a run's
position on it. What ``_repr_html_`` of schedules and schedulers shows; no matplotlib.

Only the standard library is imported here.

>>> svg = curve([0.0, 1.0, 0.5], title="lr")
>>> svg.startswith("<svg") and "polyline" in svg and ">lr 0 .. 1<" in svg
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["curve", "curves_html"]

WIDTH, HEIGHT, PAD = 260, 80, 4  # px


def curve(
    values: Sequence[float], *, title: str = "", at: int | None = None, log: bool = False
) -> str:
    """An SVG line of ``values`` (one per step) with its range written beside it; ``at``:
    a dot on that step (where a run is); ``log``: a log scale (values > 0)."""
    ys = [math.log10(v) if log and v > 0 else v for v in values]
    finite = [y for y in ys if math.isfinite(y)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (hi - lo) or 1.0
    n = max(1, len(values) - 1)

    def xy(i: int, y: float) -> tuple[float, float]:
        x = PAD + (WIDTH - 2 * PAD) * i / n
        return x, HEIGHT - PAD - (HEIGHT - 2 * PAD - 12) * (y - lo) / span

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in
                      (xy(i, y) for i, y in enumerate(ys) if math.isfinite(y)))  # fmt: skip
    vmin, vmax = min(values, default=0.0), max(values, default=0.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" style="background:#fff">',
        f'<text x="{PAD}" y="10" font-size="10" font-family="sans-serif">'
        f"{html.escape(title)} {vmin:.3g} .. {vmax:.3g}{' (log)' if log else ''}</text>",
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>',
    ]
    if at is not None and 0 <= at < len(values) and math.isfinite(ys[at]):
        x, y = xy(at, ys[at])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#d62728"/>')
    return "".join(parts) + "</svg>"


def curves_html(
    panels: Sequence[tuple[str, Sequence[float]]], text: str, at: int | None = None
) -> str:
    """Panels of ``(title, values)`` side by side, ``text`` below them (escaped)."""
    svgs = "".join(curve(v, title=t, at=at) for t, v in panels)
    return f"<div>{svgs}</div><pre>{html.escape(text)}</pre>"
