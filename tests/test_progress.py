"""Progress where a person is watching: a fit shows it by default in a terminal and in a
notebook (a bar and the per-epoch table, as HTML updated in place), stays silent in pipes
and CI, and ``Learner(progress=False)`` turns it off. The library itself never prints: a
callback writes it."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from conftest import need

from onecycle import Learner, ProgressBar
from onecycle.data import Loader


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _learner(**kw):
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    return Learner(torch.nn.Linear(2, 2), Loader(x, y, 32), Loader(x, y, 128),
                   loss_func=F.cross_entropy, **kw)  # fmt: skip


def _terminal(monkeypatch):
    """stderr is a terminal, outside CI (set in the test: pytest puts its own capture
    back in place between a fixture's setup and the test)."""
    monkeypatch.delenv("CI", raising=False)
    tty = _TTY()
    monkeypatch.setattr("sys.stderr", tty)
    return tty


def test_every_learner_has_a_progress_bar_unless_switched_off():
    bars = [c for c in _learner().cbs if isinstance(c, ProgressBar)]
    assert len(bars) == 1 and bars[0].watched_only
    assert not [c for c in _learner(progress=False).cbs if isinstance(c, ProgressBar)]
    mine = ProgressBar(table=False)
    assert [c for c in _learner(cbs=[mine]).cbs if isinstance(c, ProgressBar)] == [mine]


def test_a_fit_shows_its_table_in_a_terminal(monkeypatch):
    terminal = _terminal(monkeypatch)
    _learner().fit_one_cycle(2, 0.1)
    lines = terminal.getvalue().splitlines()
    table = [ln for ln in lines if "valid_loss" in ln or ln.strip().startswith(("0 ", "1 "))]
    assert "train_loss" in table[0] and len(table) == 3  # the header, two epochs


def test_progress_false_is_the_switch(monkeypatch):
    terminal = _terminal(monkeypatch)
    _learner(progress=False).fit_one_cycle(2, 0.1)
    assert terminal.getvalue() == ""


def test_silent_in_ci_even_in_a_terminal(monkeypatch):
    terminal = _terminal(monkeypatch)
    monkeypatch.setenv("CI", "true")
    _learner().fit_one_cycle(1, 0.1)
    assert terminal.getvalue() == ""


def test_silent_in_a_pipe(capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    _learner().fit_one_cycle(1, 0.1)  # pytest's capture: neither a terminal nor a notebook
    out, err = capsys.readouterr()
    assert out == err == ""


def test_a_fits_own_progress_bar_silences_the_learners(monkeypatch):
    terminal = _terminal(monkeypatch)
    buf = io.StringIO()
    _learner().fit_one_cycle(2, 0.1, cbs=[ProgressBar(stream=buf, bar=False)])
    assert buf.getvalue().count("train_loss") == 1 and len(buf.getvalue().splitlines()) == 3
    assert "train_loss" not in terminal.getvalue()  # the Learner's stayed quiet


@pytest.mark.slow
def test_a_notebook_shows_a_bar_and_the_table_in_place(tmp_path):
    nbformat, nbclient = need("nbformat"), need("nbclient")
    need("ipykernel")
    code = """import os, torch
os.environ.pop("CI", None)  # the kernel is the user's notebook, not CI
from onecycle import Learner
from onecycle.data import Loader
x = torch.randn(2048, 2); y = (x[:, 0] > 0).long()
learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 16), Loader(x, y, 512),
                loss_func=torch.nn.functional.cross_entropy)
learn.fit_one_cycle(3, 0.1)"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outs = nb.cells[0].outputs
    assert [o["output_type"] for o in outs] == ["display_data"]  # one display, no stderr text
    html = outs[0]["data"]["text/html"]  # its last state: the table of the three epochs
    assert html.count("<tr>") == 4 and "valid_loss" in html and "<progress" not in html
