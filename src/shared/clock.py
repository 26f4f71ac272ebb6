"""The service's clock for leases, due times and retry backoff.

Production reads the system clock. The model-based tests (tests/model) move it forward to make leases run out and
retries fall due without waiting: ``advance`` shifts every later ``now()`` in this process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC) + _offset


def advance(seconds: float) -> None:
    """Move this process's clock forward (tests only)."""
    global _offset
    _offset += timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = timedelta(0)
