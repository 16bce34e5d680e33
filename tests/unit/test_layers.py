"""The floors hold: schemas → the kit (tsunagu/) → services → tools (tsunagu_tools/), arrows only downwards;
connectors (tsunagu_connectors/) stand beside, on the contract alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tsunagu_tools import stack

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(folder: str) -> dict[str, set[str]]:
    """Each module under ``folder`` → the top-level packages it imports (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_kit_imports_only_the_contract():
    above = {m: n & {"services", "tsunagu_tools"} for m, n in imported_packages("tsunagu").items()}
    assert not {m: n for m, n in above.items() if n}


def test_no_service_imports_the_tools():
    assert not [m for m, n in imported_packages("services").items() if "tsunagu_tools" in n]


def test_the_contract_imports_nothing_of_ours_above_it():
    ours = {"tsunagu", "services", "tsunagu_tools"}
    assert not {m: n & ours for m, n in imported_packages("schemas").items() if n & ours}


def test_connectors_speak_only_the_contract():
    """A connector is a partner's agent: it reaches tsunagu through intake's HTTP door, never its code."""
    ours = {"tsunagu", "services", "tsunagu_tools"}
    assert not {m: n & ours for m, n in imported_packages("tsunagu_connectors").items() if n & ours}


def test_nothing_but_the_tools_imports_the_connectors():
    """The stack never depends on a partner's agent: only the `tsunagu` CLI and its demo mount them."""
    below = {m for folder in ("schemas", "tsunagu", "services") for m, n in imported_packages(folder).items()
             if "tsunagu_connectors" in n}
    assert not below


def test_a_missing_local_group_says_how_to_install_it():
    with pytest.raises(stack.StackError, match="`local` dependency group"):
        stack.local_package("tsunagu_no_such_embedded_server")
