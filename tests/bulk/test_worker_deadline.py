"""The bulk worker's deadline (issue #12, case 4) through the real worker handler: a run whose invocation has no time
for more than one id settles that one and sends the rest back as a new message of the same shape; the record
succeeds. Whole SQS events built from the messages moto's queue holds, as tests/bulk/test_bulk.py does.
(The whole-stack version, with the function's Timeout enforced, is tests/stack/test_worker_deadline.py.)
"""

from __future__ import annotations

import json
from typing import Any

from shared.bulk import HANDBACK_SECONDS, Deadline
from tests.bulk.test_bulk import HEALTHY, C, job, queued, submit, worker_event
from tests.conftest import Aws, lambda_context


def run_worker(aws: Aws, messages: list[dict[str, Any]], *, remaining_ms: int) -> dict[str, Any]:
    from functions.bulk_worker.app import lambda_handler

    context = lambda_context("sales-recovery-test-bulk-worker")
    context.get_remaining_time_in_millis = lambda: remaining_ms
    result: dict[str, Any] = lambda_handler(worker_event(aws, messages), context)
    return result


def test_a_run_out_of_time_settles_one_id_and_hands_the_rest_back_in_a_new_message(call_api: Any, aws: Aws) -> None:
    _, submitted = submit(call_api, HEALTHY)
    [message] = queued(aws)
    assert run_worker(aws, [message], remaining_ms=1_000) == {"batchItemFailures": []}  # the record succeeds

    [handed] = queued(aws)  # the original is in flight (received, and deleted by the mapping on this success)
    assert handed["MessageId"] != message["MessageId"] and handed["Attributes"]["ApproximateReceiveCount"] == "1"
    body = json.loads(handed["Body"])
    assert set(body) == {"job_id", "connection_id", "sale_ids"}
    assert (body["job_id"], body["connection_id"]) == (submitted["job_id"], C)
    assert len(body["sale_ids"]) == len(HEALTHY) - 1  # one id is always taken: a run makes progress
    assert body["sale_ids"] == [s for s in HEALTHY if s in body["sale_ids"]]  # in the message's order
    view = job(call_api, submitted["job_id"])
    assert view["counts"]["reflected"] == 1 and view["status"] != "completed"

    assert run_worker(aws, [handed], remaining_ms=30_000) == {"batchItemFailures": []}
    assert run_worker(aws, [message], remaining_ms=1_000) == {"batchItemFailures": []}  # SQS delivering it again
    assert queued(aws) == []  # nothing left to take, nothing handed back
    view = job(call_api, submitted["job_id"])
    assert view["status"] == "completed"
    assert view["counts"]["reflected"] == view["accepted"] == len(HEALTHY)  # each id settled once


def test_the_deadline_covers_the_worst_id_or_the_slowest_seen_plus_the_hand_back() -> None:
    left = [100.0]
    deadline = Deadline(lambda: left[0], per_id=10.0)
    assert deadline.take()  # the first id is always taken
    left[0] = 10.0 + HANDBACK_SECONDS
    assert deadline.take()
    deadline.took(30.0)  # the quota made an id take 30 s: the next needs as much
    assert deadline.needed() == 30.0 + HANDBACK_SECONDS
    assert not deadline.take()
    left[0] = 1_000.0
    assert not deadline.take()  # once refused, the rest of the run is refused too (they go back in one message)
