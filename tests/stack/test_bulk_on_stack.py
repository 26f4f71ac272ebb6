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

from devstack.stack import EmbeddedStack
from tests.stack.support import C, running_stack, stack_scenario, wait_for_job

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(stack_scenario(quota=40.0, keep_faults=True)) as running:
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
    # The page goes out after the move to escalated commits (the same write that settles the job's item), so the job
    # can read completed a moment before the help desk's inbox has it.
    deadline = time.monotonic() + 15
    while True:
        pages = [m for m in stack.help_desk_messages() if m.get("sale_id") == "2000009112000016"]
        if pages or time.monotonic() > deadline:
            break
        time.sleep(0.2)
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
