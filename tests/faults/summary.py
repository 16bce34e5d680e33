"""The summary table of `make verify-faults`: one row per fault injected, printed at the end of the run.

Each fault test calls :func:`record` once per fault it injected; ``tests/faults/conftest.py`` prints
the rows as a table after the run and writes them as Markdown to ``.tsunagu/verify-faults.md`` (the
table bench/RESULTS.md records). A row's ``differences`` must be zero: the test asserts it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

TABLE_PATH = Path(".tsunagu/verify-faults.md")
HEADERS = ("fault", "injected", "events in flight", "figures compared", "differences", "detail")


@dataclass(frozen=True)
class FaultRow:
    fault: str  # what was done, e.g. "SIGKILL routing"
    injected: int  # how many times
    in_flight: int  # events accepted but not yet fully processed when the fault struck (summed)
    compared: int  # figures compared against the simulator's ground truth / expected state
    differences: int  # figures that differed: must be zero
    detail: str = ""  # e.g. "readiness false for 4.1 s, then true"


ROWS: list[FaultRow] = []


def record(fault: str, *, injected: int, in_flight: int, compared: int, differences: int,
           detail: str = "") -> FaultRow:
    row = FaultRow(fault, injected, in_flight, compared, differences, detail)
    ROWS.append(row)
    return row


def markdown(rows: list[FaultRow]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        values = asdict(row)
        lines.append("| " + " | ".join(str(values[k]) for k in
                                          ("fault", "injected", "in_flight", "compared", "differences", "detail"))
                     + " |")
    return "\n".join(lines)
