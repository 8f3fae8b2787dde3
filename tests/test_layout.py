"""The folders show the architecture, and imports go one way: down.

    orchestration/      the apex: definitions, jobs, schedules, the main command, the UI launcher, the
        |               audit CLI
    assets/<domain>/    Dagster definitions over the domain's pure modules; assets/common/ holds the shared
        |               Dagster plumbing (resources, IO managers, settings, profiles, gates, metadata, audit)
    storage/ training/ retrieval/ quality/     plain libraries: no Dagster, no project package above them

Rules (each a test below):

- a library imports neither Dagster nor ``orchestration`` nor ``assets`` (the launched trainer may report
  through ``dagster_pipes``, which is not Dagster);
- nothing under ``assets/`` imports ``orchestration`` (an asset never imports the code location holding it);
- ``orchestration/`` imports a domain only through its ``definitions`` module, and ``assets.common``;
- a domain's pure modules (not ``assets.py`` / ``definitions.py`` / ``sensors.py`` ...) do not import Dagster;
- no import circle among the project's modules, relative and function-level imports included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestration", "assets", "training", "retrieval", "quality", "storage")
LIBRARIES = ("storage", "training", "retrieval", "quality")
DAGSTER_MODULES = {
    "assets.py",
    "definitions.py",
    "checks.py",
    "config.py",
    "sensors.py",
    "schedules.py",
    "jobs.py",
    "stages.py",
}  # stages.py: the GRPO stage assets (assets/training)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved; ``from pkg import mod``
    counted as ``pkg.mod`` too), at any level of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def python_files(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "sample_data" not in p.parts)


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name is resolved to the longest module that exists)."""
    modules = {module_name(p): p for folder in PACKAGES for p in python_files(folder)}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {
        name: {r for m in imports(path) if (r := resolve(m)) and r != name} for name, path in modules.items()
    }


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return circles


def test_libraries_take_plain_values():
    bad = []
    for lib in LIBRARIES:
        for path in python_files(lib):
            for mod in imports(path):
                top = mod.split(".")[0]
                if top in ("dagster", "orchestration", "assets") or (
                    top == "dagster_pipes" and lib != "training"
                ):
                    bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, bad


def test_assets_never_import_the_apex():
    bad = [
        f"{path.relative_to(REPO)} imports {mod}"
        for path in python_files("assets")
        for mod in imports(path)
        if mod.split(".")[0] == "orchestration"
    ]
    assert not bad, bad


def test_orchestration_imports_domains_only_through_definitions():
    bad = []
    for path in python_files("orchestration"):
        for mod in imports(path):
            parts = mod.split(".")
            if parts[0] != "assets" or len(parts) == 1:
                continue
            if len(parts) == 2 or parts[1] == "common" or parts[2] == "definitions":
                continue  # a bare ``assets.<domain>`` is the package of a ``from ... import definitions``
            bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, bad


def test_domain_pure_modules_do_not_import_dagster():
    bad = []
    for path in python_files("assets"):
        if path.name in DAGSTER_MODULES or path.name == "__init__.py" or "common" in path.parts:
            continue
        for mod in imports(path):
            if mod.split(".")[0] == "dagster":
                bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, bad


def test_no_import_circles():
    circles = import_circles(project_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_circles(graph) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []
