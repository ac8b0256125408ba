"""`import allocator` loads the SSN core only; dashboards read the store only."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_allocator_loads_only_the_core() -> None:
    code = (
        "import sys, allocator; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('trials', 'search_spaces', 'dashboards', 'optuna', 'ray', 'sqlalchemy', 'sklearn')"
        " or m.startswith(('allocator.search', 'allocator.cli'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module if node.module.startswith("allocator.") else node.module.split(".")[0])
    return found


def test_core_modules_import_none_of_our_other_packages() -> None:
    for path in (ROOT / "allocator").glob("_*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                assert top not in ("trials", "search_spaces", "dashboards"), path
                assert not node.module.startswith(("allocator.search", "allocator.cli")), path


def test_lower_layers_do_not_import_upper_ones() -> None:
    for package in ("trials", "search_spaces"):
        imported = _imports(package)
        assert "dashboards" not in imported
        assert not any(m.startswith(("allocator.search", "allocator.cli")) for m in imported), package
    assert "trials" not in _imports("search_spaces")


def test_dashboards_read_the_store_and_nothing_else_of_ours() -> None:
    """Of our packages, dashboards import only the core's error types (so that the CLI
    maps their errors to exit status 2), the store's address (default, environment
    variable, password masking), the Pareto front (the same front as `npas pareto`) and
    the vocabulary of methods, generators and mappings (one definition for all);
    the store is read through SQLAlchemy and Optuna."""
    ours: set[str] = set()
    for path in (ROOT / "dashboards").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] in ("allocator", "trials", "search_spaces"):
                    ours.add(node.module)
            elif isinstance(node, ast.Import):
                ours |= {a.name for a in node.names
                         if a.name.split(".")[0] in ("allocator", "trials", "search_spaces")}
    assert ours == {"allocator._errors", "allocator._storage_url", "allocator._pareto",
                    "allocator._vocab"}
    code = (
        "import sys, dashboards; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'trials', 'search_spaces', 'ray'})"
        " + [m for m in sys.modules if m.startswith(('allocator.search', 'allocator.cli'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
