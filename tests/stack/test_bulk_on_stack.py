"""Bulk on the whole local stack: the API over HTTP, moto's SQS with the template's redrive policy, the worker
driven by the local poller, the relink state machine taking over transient failures, the simulated ML with a quota.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.aws import instant_retries
from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from tests.conftest import DEFAULT_SCENARIO

pytestmark = pytest.mark.stack
C = "mla-main"


def scenario(quota: float | None = 40.0) -> Scenario:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    # Keep the scenario's timeouts and 503s; drop its latency and its one deliberate 429, so any 429 here
    # would be the quota's.
    data["faults"] = [f for f in data["faults"] if f["kind"] != "latency" and f.get("status") != 429]
    data["quota"] = {"requests_per_second": quota} if quota else None
    return Scenario.model_validate(data)


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/connections/{C}/reprocessing-jobs/{job_id}", params={"limit": "1000"}).json()
        if body["status"] == "completed" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with (
        EmbeddedStack(scenario(), api_port=0, timeout_hold_seconds=1.0, meli_timeout_seconds=0.5) as running,
        instant_retries(),
    ):
        yield running


def test_the_default_scenario_as_one_job_settles_every_id_within_the_quota(stack: EmbeddedStack) -> None:
    orders = [str(o["id"]) for o in stack.scenario.orders if o["seller"]["id"] == 123456789]
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as http:
        submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ", ".join(orders)}).json()
        view = wait_for_job(http, submitted["job_id"])
    assert view["status"] == "completed"
    assert sum(view["counts"].values()) == view["accepted"] == len(orders)
    outcomes = {i["sale_id"]: i["outcome"] for i in view["items"]}
    assert outcomes["2000009112000016"] == "escalated"  # 503 always: 1 bulk attempt + 2 in the state machine
    assert next(i for i in view["items"] if i["sale_id"] == "2000009112000016")["attempts"] == 3
    assert outcomes["2000009115000017"] == "reflected"  # reflected on attempt 2, in the state machine
    assert outcomes["2000009102000015"] == "already_reflected"
    assert stack.meli.count(status=429) == 0  # the shared token bucket kept every worker under the quota
    pages = [m for m in stack.help_desk_messages() if m.get("sale_id") == "2000009112000016"]
    assert len(pages) == 1


def test_a_poison_message_goes_to_the_dlq_without_failing_its_siblings(stack: EmbeddedStack) -> None:
    sqs = stack.aws.client("sqs")
    queue, dlq = stack.aws.physical_id("BulkQueue"), stack.aws.physical_id("BulkDeadLetterQueue")
    sqs.send_message(QueueUrl=queue, MessageBody='{"job_id": "j", "connection_id": "mla-main", "sale_ids": 7}')
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as http:
        submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ["2000009101000011"]}).json()
        view = wait_for_job(http, submitted["job_id"])
    assert view["status"] == "completed"
    deadline = time.monotonic() + 30
    moved: list[dict[str, Any]] = []
    while not moved and time.monotonic() < deadline:  # 3 receives, redelivered after 1 s each, then the DLQ
        moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"])["sale_ids"] for m in moved] == [7]
