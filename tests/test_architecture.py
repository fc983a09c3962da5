"""The shape rules of docs/architecture.md, checked on the source: no import circle anywhere in
harness/ (imports inside functions included; ``if TYPE_CHECKING:`` imports excluded, they never
run), every harness exception derives from harness.errors.HarnessError, and no module is over
~400 lines."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import harness
from harness.errors import HarnessError

ROOT = Path(harness.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """harness modules that ``path`` imports when it runs (at module level or in a function)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module in modules:
                    found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names if f"{child.module}.{a.name}" in modules)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    graph = {name: _imports(path, modules) - {name} for name, path in paths.items()}
    # importing a.b.c runs a and a.b too; but a submodule's own parent packages are already loaded
    # when it runs (a facade __init__ re-exporting its modules is no circle), unless named explicitly
    for name in list(graph):
        graph[name] = {dep for d in graph[name] for dep in _with_parents(d)
                       if dep in modules and dep != name and (dep == d or not name.startswith(dep + "."))}
    return graph


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := dfs(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_no_import_circle_in_harness() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_harness_exception_derives_from_harness_error() -> None:
    strays = []
    for info in pkgutil.walk_packages(harness.__path__, "harness."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
                    and not issubclass(obj, HarnessError)):
                strays.append(f"{info.name}.{name}")
    assert not strays, f"exceptions outside the HarnessError family: {strays}"


MAX_LINES = 420  # docs/architecture.md: "no module over ~400 lines"


def test_no_harness_module_is_over_the_size_limit() -> None:
    sizes = {p.relative_to(ROOT.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in ROOT.rglob("*.py")}
    over = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not over, f"split these modules (one job per module, at most ~400 lines): {over}"
