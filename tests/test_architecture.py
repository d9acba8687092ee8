"""The import rules of docs/architecture.md, checked on the source itself.

Each rule is read from the modules' import statements (top level and inside functions;
imports under ``if TYPE_CHECKING:`` are type hints only and do not count), plus one real
``import onecycle`` in a fresh interpreter for what it loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "onecycle"
STDLIB = set(sys.stdlib_module_names)
HEAVY = ("matplotlib", "tqdm", "tensorboard", "lightning", "transformers", "timm")


def _imports(path: Path) -> set[str]:
    """Modules imported by ``path`` at run time (not under ``if TYPE_CHECKING:``),
    as absolute dotted names."""
    tree = ast.parse(path.read_text())
    hints = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            if node.module == "onecycle":  # from onecycle import schedules as S
                out.update(f"onecycle.{a.name}" for a in node.names)
    return out


def _modules() -> dict[str, set[str]]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(("onecycle", *path.relative_to(SRC).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = _imports(path)
    return found


MODULES = _modules()


def _internal(name: str) -> set[str]:
    return {m for m in MODULES[name] if m.startswith("onecycle.")}


def test_the_rules_see_every_module():
    assert {"onecycle.learner", "onecycle.schedules", "onecycle.cli"} <= set(MODULES)
    assert "onecycle.errors" in MODULES["onecycle.schedules"]  # the parser reads imports


def test_schedules_import_only_the_standard_library():
    for name in (
        "onecycle.schedules",
        "onecycle.shapes",
        "onecycle.errors",
        "onecycle.budget",
        "onecycle.svg",
    ):
        outside = {m for m in MODULES[name] if m.split(".")[0] not in STDLIB}
        assert outside <= {"onecycle.errors", "onecycle.svg", "onecycle.shapes"}, (name, outside)


@pytest.mark.parametrize(
    "name",
    ["onecycle.scheduler", "onecycle.hyperparams", "onecycle.suggest", "onecycle.range_test"],
)
def test_the_scheduler_and_range_test_work_without_the_learner(name):
    learner_side = {"onecycle.learner", "onecycle.recipes", "onecycle.probes", "onecycle.auto"}
    assert not _internal(name) & learner_side


@pytest.mark.parametrize(
    "name",
    [
        "onecycle.params",
        "onecycle.distributed",
        "onecycle.checkpoint",
        "onecycle.resume",
        "onecycle.callbacks",
        "onecycle.batch",
        "onecycle.lock",
    ],
)
def test_what_the_learner_uses_does_not_import_it(name):
    assert "onecycle.learner" not in _internal(name)


@pytest.mark.parametrize("name", ["onecycle.inference", "onecycle.persist", "onecycle.summary"])
def test_the_learners_bound_methods_name_it_by_a_protocol(name):
    # not even under TYPE_CHECKING: what they read is a Protocol of their own
    text = SRC.joinpath(name.split(".")[1] + ".py").read_text()
    assert "onecycle.learner" not in text and "Protocol" in text


def test_a_module_written_for_a_heavy_library_is_imported_only_inside_functions():
    for name, path in ((n, _file(n)) for n in MODULES):
        top = ast.parse(path.read_text()).body
        for node in top:
            if isinstance(node, ast.ImportFrom) and node.module in WRITTEN_FOR:
                pytest.fail(f"{name} imports {node.module} at the top")
            if isinstance(node, ast.Import) and {a.name for a in node.names} & set(WRITTEN_FOR):
                pytest.fail(f"{name} imports {WRITTEN_FOR} at the top")


def _file(name: str) -> Path:
    path = SRC.joinpath(*name.split(".")[1:]) if name != "onecycle" else SRC / "__init__"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"


def test_the_library_never_imports_its_command_line():
    cli = {"onecycle.cli", "onecycle.cli_parser", "onecycle.__main__"}
    for name, imports in MODULES.items():
        if name not in cli:
            assert not imports & cli, name


# modules written for one optional library, which import it at the top: each is imported by
# the rest of onecycle only inside the functions that need it
WRITTEN_FOR = {"onecycle.figure": "matplotlib"}


def test_heavy_optional_libraries_are_imported_inside_functions():
    # onecycle.integrations.* are the code that needs them: imported only when asked for
    for name in (m for m in MODULES if not m.startswith("onecycle.integrations")):
        if name in WRITTEN_FOR:
            continue
        path = SRC.joinpath(*name.split(".")[1:]) if name != "onecycle" else SRC / "__init__"
        file = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        top = ast.parse(file.read_text()).body
        for node in top:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""
                ]  # fmt: skip
                assert not [n for n in names if n.split(".")[0] in HEAVY], (name, names)


def test_import_onecycle_loads_no_heavy_library_and_no_cli():
    # torch itself may load some of them (this torch imports tqdm): count what onecycle adds
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import onecycle\n"
        f"heavy = sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({HEAVY!r}))\n"
        "cli = [m for m in ('onecycle.cli', 'onecycle.cli_parser', 'onecycle.integrations')\n"
        "       if m in sys.modules]\n"
        "print(heavy, cli)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def _every_import(path: Path) -> set[str]:
    """Every onecycle module ``path`` imports: top level, inside functions and under
    ``if TYPE_CHECKING:`` alike (a type hint is a dependency a reader must follow too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module != "onecycle":
                out.add(node.module)
                continue
            for a in node.names:  # a submodule, or a name of the package (its __init__)
                sub = f"onecycle.{a.name}"
                out.add(sub if sub in MODULES else "onecycle")
    return {m for m in out if m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_counting_every_import():
    graph = {name: _every_import(_file(name)) for name in MODULES}
    assert _cycles(graph) == []


def test_the_loop_imports_none_of_what_is_built_on_it():
    above = {"onecycle.learner", "onecycle.recipes", "onecycle.auto", "onecycle.probes",
             "onecycle.prefixes", "onecycle.fallback", "onecycle.candidates",
             "onecycle.sweeps", "onecycle.prefix_search"}  # fmt: skip
    assert not _every_import(_file("onecycle.loop")) & above
