"""The matplotlib ``Figure`` every onecycle plot returns, built without pyplot.

matplotlib is imported at the top of this module, and only ``onecycle.plots`` imports it,
inside its functions: ``import onecycle`` loads no matplotlib.

A figure made here is never registered with pyplot, so it leaves the user's backend,
current figure and ``plt.show()`` alone, and is not drawn a second time by a notebook's
end-of-cell flush. ``_repr_png_`` makes it show inline in Jupyter when it is a cell's value,
whether or not the user's session ever imported pyplot.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure as _MatplotlibFigure

__all__ = ["Figure", "new_figure"]


class Figure(_MatplotlibFigure):
    """A plain ``matplotlib.figure.Figure`` that renders itself as a PNG in Jupyter.

    Save it with ``fig.savefig(path)``; draw it into your own figure instead by passing
    ``ax=`` to the plot function.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()


def new_figure(**kwargs: Any) -> Figure:
    """A new ``Figure`` (``kwargs`` as ``matplotlib.figure.Figure``'s), tight layout."""
    kwargs.setdefault("layout", "tight")
    return Figure(**kwargs)
