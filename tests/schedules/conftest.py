"""The schedules' tests: short trailing windows keep a reconciliation run to a few hour slices."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.wiring import build_schedule_service


@pytest.fixture(autouse=True)
def _schedule_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RECONCILE_LOOKBACK_HOURS", "4")
    build_schedule_service.cache_clear()  # its clients belong to the previous test's moto account
    yield
    build_schedule_service.cache_clear()
