"""Plots belong to the user: the backend is never changed, every plot draws into ``ax`` when
given, returns the matplotlib Figure and writes a file only when given ``path``; in a
notebook they show inline. The last test runs a real Jupyter kernel with the inline
backend (matplotlib-inline, as a notebook has it)."""

from __future__ import annotations

import base64

import pytest
import torch
from conftest import need

from onecycle import Learner, range_test
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.plots import plot_losses, plot_recorded, plot_schedule
from onecycle.schedules import one_cycle, one_cycle_moms

matplotlib = need("matplotlib")


def _result(**kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x.sum(1) > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]
    return range_test(model, opt, torch.nn.functional.cross_entropy, batches, num_it=100, **kw)


@pytest.fixture(scope="module")
def res():
    return _result()


@pytest.fixture(scope="module")
def learn():
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 32), Loader(x, y, 128),
                    loss_func=torch.nn.functional.cross_entropy)  # fmt: skip
    learn.fit_one_cycle(2, 0.1)
    return learn


@pytest.fixture
def svg_backend():
    """A backend the user chose (not Agg): it must stay chosen."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield
    matplotlib.use(before)


def _calls(res, learn):
    return {
        "range_test": lambda **kw: res.plot(**kw),
        "loss": lambda **kw: learn.recorder.plot_loss(**kw),
        "sched": lambda **kw: learn.recorder.plot_sched(**kw),
        "schedule": lambda **kw: plot_schedule({"lr": one_cycle(0.1)}, 100, **kw),
    }


@pytest.mark.parametrize("which", ["range_test", "loss", "sched", "schedule"])
def test_a_plot_keeps_the_users_backend_and_returns_a_figure(which, res, learn, svg_backend):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    open_before = plt.get_fignums()
    fig = _calls(res, learn)[which]()
    assert isinstance(fig, Figure)
    assert matplotlib.get_backend() == "svg"  # the old code switched to Agg here
    assert plt.get_fignums() == open_before  # pyplot never saw it: plt.show() is the user's
    assert fig._repr_png_()[:4] == b"\x89PNG"  # what a notebook shows inline


@pytest.mark.parametrize("which", ["range_test", "loss", "sched", "schedule"])
def test_a_plot_writes_a_file_only_when_given_a_path(which, res, learn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _calls(res, learn)[which]()
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "sub" / f"{which}.png"
    _calls(res, learn)[which](path=out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plots_draw_into_the_users_axes(res, learn):
    from matplotlib.figure import Figure

    fig = Figure()
    a, b = fig.subplots(1, 2)
    assert res.plot(ax=a) is fig
    labels = [line.get_label() for line in a.lines]
    assert labels[:3] == ["loss", "EMA (stop rule)", "zero-lag (suggestions)"]
    assert learn.recorder.plot_loss(ax=b) is fig and len(b.lines) >= 2
    assert len(fig.axes) == 2  # nothing added beside the user's axes
    two = Figure().subplots(1, 2)
    assert learn.recorder.plot_sched(ax=two) is two[0].figure
    assert [x.get_ylabel() for x in two] == ["lr", "momentum"]


def test_the_wrong_number_of_axes_is_refused(learn):
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    with pytest.raises(ConfigError, match=r"^ax='one Axes' is invalid: expected a sequence of 2"):
        plot_schedule({"lr": one_cycle(0.1), "momentum": one_cycle_moms()}, 10, ax=ax)


def test_the_range_test_figure_marks_the_suggestions_and_the_pick():
    res = _result(end_lr=100.0)  # runs into the divergence: every rule answers
    assert res.lr_max is not None
    fig = res.plot(marks={"mine": 0.01})
    labels = [line.get_label() for line in fig.axes[0].lines]
    for name in ("valley", "steep", "minimum", "clr_bounds"):
        lr = res.suggestions[name].lr
        assert f"{name} {lr:.2g}" in labels
    assert f"lr_max {res.lr_max:.2g}" in labels and "mine 0.01" in labels
    pick = next(ln for ln in fig.axes[0].lines if ln.get_label().startswith("lr_max"))
    assert pick.get_xdata()[0] == pytest.approx(res.lr_max)


def test_the_module_functions_return_figures(learn):
    from matplotlib.figure import Figure

    assert isinstance(plot_losses(learn.recorder), Figure)
    assert isinstance(plot_recorded(learn.recorder.hypers), Figure)


NOTEBOOK = [
    "%matplotlib inline\nimport matplotlib\nbackend = matplotlib.get_backend()\nbackend",
    # a range test and a short fit, as a user's first cells
    """import torch
from onecycle import Learner, range_test
from onecycle.data import Loader
g = torch.Generator().manual_seed(0)
x = torch.randn(512, 4, generator=g); y = (x.sum(1) > 0).long()
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
res = range_test(model, opt, torch.nn.functional.cross_entropy,
                 [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)], num_it=100, end_lr=100.)
learn = Learner(torch.nn.Linear(4, 2), Loader(x, y, 64), Loader(x, y, 256),
                loss_func=torch.nn.functional.cross_entropy)
learn.fit_one_cycle(2, 0.1)""",
    "res.plot()",  # 2: shows inline, once
    "assert matplotlib.get_backend() == backend, matplotlib.get_backend()\n"
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()",  # 3: the user's own
    "learn.recorder.plot_loss()",  # 4
    "fig = res.plot()\n"
    "labels = [ln.get_label() for ln in fig.axes[0].lines]\n"
    "assert any(lb.startswith('lr_max') for lb in labels), labels\n"
    "assert any(lb.startswith('valley') for lb in labels), labels\n"
    "assert matplotlib.get_backend() == backend\nlabels",  # 5
    "fig, axs = plt.subplots(1, 2)\nlearn.recorder.plot_sched(ax=axs);",  # 6: the user's axes
    "res",  # 7: the result itself: its curve and its pick
    "from onecycle import plot_schedule\nfrom onecycle.schedules import one_cycle\n"
    "fig = plot_schedule({'lr': one_cycle(0.1)}, 100)\n"
    "assert matplotlib.get_backend() == backend\nfig",  # 8
]


def _images(cell) -> list[bytes]:
    return [
        base64.b64decode(out["data"]["image/png"])
        for out in cell.outputs
        if out.get("output_type") in ("display_data", "execute_result")
        and "image/png" in out.get("data", {})
    ]


@pytest.mark.slow
def test_plots_show_inline_in_a_real_kernel_and_leave_the_backend_alone(tmp_path):
    nbformat = need("nbformat")
    nbclient = need("nbclient")
    need("ipykernel")
    need("matplotlib_inline")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK]
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                      resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()  # raises CellExecutionError (with the traceback) if an assert fails
    cells = nb.cells
    backend = cells[0].outputs[0]["data"]["text/plain"]
    assert "inline" in backend, backend  # a notebook's backend
    assert len(_images(cells[2])) == 1  # res.plot(): shown once, not twice
    assert len(_images(cells[3])) == 1  # the user's own plt.show() still shows theirs
    assert len(_images(cells[4])) == 1  # learn.recorder.plot_loss()
    assert "lr_max" in cells[5].outputs[0]["data"]["text/plain"]
    assert len(_images(cells[6])) == 1  # the user's figure, flushed by the inline backend
    html = cells[7].outputs[0]["data"]["text/html"]
    assert "data:image/png;base64" in html and "lr_max" in html and "valley" in html
    assert len(_images(cells[8])) == 1
