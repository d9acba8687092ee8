"""The API reference builds from the docstrings with warnings as errors (``mkdocs build
--strict``: a broken cross-reference, a docstring that does not parse) and holds every
public name: each module's ``__all__`` rendered on its page, each of ``onecycle.__all__``
reachable."""

from __future__ import annotations

import ast
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import need

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "onecycle"
REFERENCE = ROOT / "docs" / "reference"


def _public(path: Path) -> list[str]:
    """A module's ``__all__``, read from its source (no import: the integrations' need
    their trainers)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):  # fmt: skip
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


def _modules() -> dict[str, list[str]]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(("onecycle", *parts)).removesuffix(".__init__")
        if name != "onecycle" and _public(path):
            out[name] = _public(path)
    return out


def _inventory(site: Path) -> set[str]:
    data = (site / "objects.inv").read_bytes()
    body = zlib.decompress(data.split(b"\n", 4)[4]).decode()
    return {line.split(" ")[0] for line in body.splitlines() if line}


def test_every_public_module_has_a_reference_page():
    for name in _modules():
        page = REFERENCE / f"{name.removeprefix('onecycle.')}.md"
        assert page.is_file() and f"::: {name}" in page.read_text(), name


@pytest.mark.slow
def test_the_reference_builds_strictly_and_holds_every_public_name(tmp_path):
    need("mkdocs")
    need("mkdocstrings")
    site = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    found = _inventory(site)
    missing = []
    for module, names in _modules().items():
        html = (site / "reference" / module.removeprefix("onecycle.") / "index.html").read_text()
        for name in names:
            if f"{module}.{name}" not in found or f'id="{module}.{name}"' not in html:
                missing.append(f"{module}.{name}")
    assert not missing, missing
    import onecycle

    for name in onecycle.__all__:  # each where it is defined (a module: its page)
        obj = getattr(onecycle, name)
        if isinstance(obj, type(onecycle)):
            assert (site / "reference" / obj.__name__.removeprefix("onecycle.")).is_dir(), name
        elif name != "__version__":
            assert f"{obj.__module__}.{name}" in found, name
