"""Collects one row per fault case and prints the table in pytest's terminal summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest


class FaultRow(NamedTuple):
    case: str
    ids: int
    faults: str
    lost: int
    duplicated: int
    escalated: int
    dlq: int
    wrong_pages: int = 0  # a second page for one episode, or a page for a sale that ended reflected or blocked


ROWS: list[FaultRow] = []


@pytest.fixture
def fault_table() -> Callable[[FaultRow], None]:
    return ROWS.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault injection: every accepted id exactly one terminal outcome")
    header = (
        f"{'case':<40}{'ids':>5}  {'faults injected':<28}{'lost':>5}{'dup':>5}{'escalated':>10}{'DLQ':>5}"
        f"{'wrong pages':>12}"
    )
    terminalreporter.write_line(header)
    terminalreporter.write_line("-" * len(header))
    for row in ROWS:
        terminalreporter.write_line(
            f"{row.case:<40}{row.ids:>5}  {row.faults:<28}"
            f"{row.lost:>5}{row.duplicated:>5}{row.escalated:>10}{row.dlq:>5}{row.wrong_pages:>12}"
        )
