"""Helpers shared by the tests that run the whole local stack (one stack per module, one per process at a time)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from devstack.aws import instant_retries
from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from tests.conftest import DEFAULT_SCENARIO

C = "mla-main"


def stack_scenario(*, quota: float | None = None, keep_faults: bool = False) -> Scenario:
    """The default scenario without its latency; its timeouts and 503s only when asked, never its one 429."""
    data = json.loads(DEFAULT_SCENARIO.read_text())
    kept = [f for f in data["faults"] if f["kind"] != "latency" and f.get("status") != 429] if keep_faults else []
    data["faults"] = kept
    data["quota"] = {"requests_per_second": quota} if quota else None
    return Scenario.model_validate(data)


@contextmanager
def running_stack(scenario: Scenario, **options: Any) -> Iterator[EmbeddedStack]:
    """The stack with the API on a free port, short ML timeouts, and Step Functions Retry sleeps skipped."""
    settings: dict[str, Any] = {"api_port": 0, "meli_timeout_seconds": 0.5, "timeout_hold_seconds": 1.0, **options}
    with EmbeddedStack(scenario, **settings) as running, instant_retries():
        yield running


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until every accepted id is terminal (or the timeout); returns the last view."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/connections/{C}/reprocessing-jobs/{job_id}", params={"limit": "1000"}).json()
        if body["status"] == "completed" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def list_sale(stack: EmbeddedStack, sale_id: str, error_type: str, message: str, *, connection_id: str = C) -> None:
    """Put a sale in the error list as the platform does when its own import fails (the scenario's sale_errors)."""
    from shared.lifecycle import moves
    from shared.lifecycle.change import Decision
    from shared.lifecycle.table import Actor
    from shared.models import ErrorEntry, ErrorEvent, ErrorType

    retryable = ErrorType(error_type).retryable if error_type in ErrorType._value2member_map_ else True
    entry = ErrorEntry(
        connection_id=connection_id,
        sale_id=sale_id,
        error_type=error_type,
        message=message,
        retryable=retryable,
        history=[ErrorEvent(error_type=error_type, message=message)],
    )
    stack.service().lifecycle.run(
        connection_id, sale_id, lambda snap: Decision(None, moves.list_error(snap, Actor.PLATFORM, entry=entry))
    )
