"""Faults (`make verify-faults`): the whole stack under SIGKILL, database and broker restarts, and a
paused consumer, with the simulator's ground truth as the oracle.

``TSUNAGU_VERIFY_SIZE=full`` runs a trial-sized replay and more kills; the default is CI size.
"""

from __future__ import annotations

import os

import pytest

from tests.faults import summary

FULL = os.environ.get("TSUNAGU_VERIFY_SIZE", "ci") == "full"


def size(ci: int, full: int) -> int:
    return full if FULL else ci


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: faults injected into the running stack (make verify-faults)")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not summary.ROWS:
        return
    table = summary.markdown(summary.ROWS)
    terminalreporter.section("faults injected (make verify-faults)")
    terminalreporter.write_line(table)
    summary.TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    summary.TABLE_PATH.write_text(table + "\n", encoding="utf-8")
