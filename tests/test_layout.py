"""The folders show the architecture: libraries take plain values, domains hold their own code.

- ``retrieval/``, ``quality/`` and ``training/`` import neither Dagster nor ``orchestration``.
- ``orchestration/`` imports a domain only through its ``definitions`` module.
- pure modules of a domain (everything but ``assets.py`` / ``definitions.py`` / ``checks.py``) do not import Dagster.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("retrieval", "quality", "training")
DAGSTER_MODULES = {"assets.py", "definitions.py", "checks.py", "metadata.py", "gates.py", "config.py",
                   "sensors.py", "schedules.py"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_libraries_take_plain_values():
    bad = []
    for lib in LIBRARIES:
        for path in python_files(lib):
            for mod in imports(path):
                if mod.split(".")[0] in ("dagster", "dagster_pipes", "orchestration", "assets"):
                    if lib == "training" and mod.split(".")[0] == "dagster_pipes":
                        continue  # the launched training process reports back through Pipes (no Dagster)
                    bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, bad


def test_orchestration_imports_domains_only_through_definitions():
    bad = []
    for path in python_files("orchestration"):
        for mod in imports(path):
            parts = mod.split(".")
            if parts[0] == "assets" and not (len(parts) == 3 and parts[2] == "definitions"):
                bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, bad


def test_domain_pure_modules_do_not_import_dagster():
    bad = []
    for path in python_files("assets"):
        if path.name in DAGSTER_MODULES or path.name == "__init__.py":
            continue
        for mod in imports(path):
            if mod.split(".")[0] == "dagster":
                bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, bad
