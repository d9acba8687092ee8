"""Every command and Python snippet in README.md and docs/*.md runs as written, so the docs
cannot drift from the code.

- ``python`` blocks run in a fresh namespace that holds only what the README says is the
  user's (``model``, ``opt``, ``loader``, ``loss_fn``, ``epochs``: a 1-D CNN on MNIST-1D);
  Fashion-MNIST's loader returns 2,000 training and 1,000 test images (MNIST-1D is small).
- ``bash`` blocks: each ``onecycle ...`` command runs in-process with a tiny override
  (``--epochs 2 --train-samples 1000/2000`` for fit, and ``--budget 2s``; for study one
  seed, one evaluation per epoch, no ablations, ``--quick`` on Fashion-MNIST; ``--out`` in a
  temporary folder; a command that differs from one already run only by ``--out`` runs
  once); ``torchrun ... -m onecycle`` runs as a 2-process job with the same override; a
  benchmark command (hours of training) is checked flag by flag against its ``--help``;
  ``make`` targets must exist (they are the quick start itself; CI runs ``make test``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import onecycle.data as data_mod
from onecycle.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = {  # commands that cannot run on one CPU host, and why
    "--nnodes=2": "a 2-host rendezvous (host0:29400)",
}


def blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, line, text) of each fenced block."""
    out, lang, start, buf = [], None, 0, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, buf = line[3:].strip() or "text", i, []
            else:
                out.append((lang, start, "\n".join(buf)))
                lang = None
        elif lang is not None:
            buf.append(line)
    return out


def commands(text: str) -> list[str]:
    """Shell commands of a bash block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


# Pages read top to bottom, each block building on the ones before: their python blocks run
# in order in one namespace (one case per page).
TUTORIALS = {"getting-started.md"}


def _cases(path: Path) -> list[tuple[str, int, str]]:
    found = [(lang, line, text) for lang, line, text in blocks(path) if lang in ("python", "bash")]
    if path.name not in TUTORIALS:
        return found
    python = [b for b in found if b[0] == "python"]
    joined = [("python", python[0][1], "\n".join(t for _, _, t in python))] if python else []
    return joined + [b for b in found if b[0] != "python"]


CASES = [
    pytest.param(lang, path, line, text, id=f"{path.relative_to(ROOT)}:{line}")
    for path in DOCS
    for lang, line, text in _cases(path)
]


def test_the_docs_have_snippets():
    assert len([c for c in CASES if c.values[0] == "python"]) >= 6
    assert len([c for c in CASES if c.values[0] == "bash"]) >= 12


def _small(load, n_train, n_test):
    def wrapped(*args, **kwargs):
        d = load(*args, **kwargs)
        return dataclasses.replace(
            d, x_train=d.x_train[:n_train], y_train=d.y_train[:n_train],
            x_test=d.x_test[:n_test], y_test=d.y_test[:n_test],
        )  # fmt: skip

    return wrapped


def _needs_fashion(text: str, in_ci: bool) -> None:
    if "fashion" in text and data_mod.find_fashion_mnist() is None:
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI (.ci/run)")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def _override(argv: list[str], out: Path) -> list[str]:
    """The tiny version of an ``onecycle`` command: same flags, little training."""
    args = list(argv)
    if "--out" in args:
        args[args.index("--out") + 1] = str(out)
    elif args[0] != "demo":
        args += ["--out", str(out)]
    cmd = args[0]
    samples = ["--train-samples", "1000" if "fashion-mnist" in args else "2000"]
    if cmd == "fit":
        if "--epochs" in args:
            args[args.index("--epochs") + 1] = "2"
        if "--budget" in args:  # a time budget: a short one
            args[args.index("--budget") + 1] = "2s"
        args += ["--no-progress"] + ([] if "--factory" in args else samples)
    elif cmd == "lr-find":
        args += samples
    elif cmd == "study":  # on Fashion --quick, one epoch; MNIST-1D as documented (30)
        if "--seeds" in args:
            args[args.index("--seeds") + 1] = "1"
        fashion = "fashion-mnist" in args
        quick = ["--quick", "--epochs", "1", *samples] if "--epochs" not in args else []
        args += ["--evals-per-epoch", "1"] + (quick if fashion else [])
        if not fashion and "--quick" not in args:  # the run's length: its probes need it
            args += ["--epochs", "30"]
        if "--ablations" in args:  # test_study.py runs them; here the flag is parsed only
            args.remove("--ablations")
    elif cmd == "demo":
        args += ["--epochs", "2", "--no-progress", "--out", str(out)]
    return args


FACTORY = """
import torch, torch.nn.functional as F
from onecycle.data import Loader

def make():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g); y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return model, Loader(x, y, 20), Loader(x, y, 100, shuffle=False), F.cross_entropy
"""


@pytest.mark.slow
@pytest.mark.parametrize(("lang", "path", "line", "text"), CASES)
def test_snippet_runs(lang, path, line, text, tmp_path, monkeypatch, in_ci):
    monkeypatch.chdir(tmp_path)  # files a snippet writes land here
    monkeypatch.setattr(data_mod, "load_fashion_mnist",
                        _small(data_mod.load_fashion_mnist, 2000, 1000))  # fmt: skip
    _needs_fashion(text, in_ci)
    if lang == "python":
        _run_python(text)
    else:
        for cmd in commands(text):
            _run_command(cmd, tmp_path)


def _run_python(text: str) -> None:
    import torch
    import torch.nn.functional as F

    from onecycle.data import Loader
    from onecycle.models import cnn1d

    d = data_mod.load_mnist1d()
    torch.manual_seed(0)
    model = cnn1d()
    ns = {
        "torch": torch, "model": model, "loss_fn": F.cross_entropy, "epochs": 2,
        "loader": Loader(d.x_train, d.y_train, 100),
        "opt": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
    }  # fmt: skip
    exec(compile(text, "<snippet>", "exec"), ns)


_DONE: set[tuple[str, ...]] = set()


def _run_command(cmd: str, tmp: Path) -> None:
    for marker in NOT_RUN:
        if marker in cmd:
            return  # documented above: cannot run here
    argv = shlex.split(cmd)
    if "--out" in argv:
        i = argv.index("--out")
        key = tuple(argv[:i] + argv[i + 2 :])
        if key in _DONE:
            return
        _DONE.add(key)
    if "--factory" in argv:
        module = argv[argv.index("--factory") + 1].split(":")[0]
        (tmp / f"{module}.py").write_text(FACTORY)
    out = tmp / f"out{abs(hash(cmd)) % 10**6}"
    if argv[0] == "make":
        assert argv[1] in _make_targets(), f"make {argv[1]}: no such target in the Makefile"
        return
    if argv[0] == "onecycle":
        args = _override(argv[1:], out)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(args)
        assert rc == 0, (cmd, args, err.getvalue()[-2000:])
        return
    if argv[0] == "torchrun":
        i = argv.index("onecycle")
        args = _override(argv[i + 1 :], out)
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1 : i + 1],
                            *args], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert p.returncode == 0, (cmd, p.stderr[-2000:])
        return
    if argv[0].endswith("python") and argv[1].startswith("benchmarks/"):
        _check_flags(argv[1], argv[2:])
        return
    pytest.fail(f"a documented command this test does not know how to run: {cmd}")


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, flags=re.M))


def _check_flags(script: str, args: list[str]) -> None:
    """A benchmark runs for minutes to hours: check that the script exists and knows every
    flag the docs give it."""
    path = ROOT / script
    assert path.is_file(), f"{script}: no such benchmark"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", p.stdout), f"{script}: no flag {flag}"
