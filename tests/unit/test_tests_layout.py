"""The tests' own layout: what several test modules share lives in support modules (tests/support.py,
tests/fakes.py, ``*_support.py``) or conftest.py fixtures, never in a test module another one imports."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parents[1]


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def test_no_test_module_imports_another_test_module():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            if any(part.startswith("test_") for part in name.split(".")[1:]):
                offenders.append(f"{path.relative_to(TESTS.parent)}: {name}")
    assert not offenders, "move the shared helpers into a support module:\n" + "\n".join(offenders)
