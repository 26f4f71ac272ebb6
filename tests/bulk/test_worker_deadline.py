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
    # Time for the first id's ML read (the worker keeps HANDBACK_SECONDS from ML), not for the worst case of a second.
    assert run_worker(aws, [message], remaining_ms=3_000) == {"batchItemFailures": []}  # the record succeeds

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
    assert run_worker(aws, [message], remaining_ms=3_000) == {"batchItemFailures": []}  # SQS delivering it again
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


# Case af of the default scenario (scenarios/README.md): a cart of three orders in one released pack.
AF_PACK, AF_SALES = "2000006171000016", ["2000009171000013", "2000009171000020", "2000009171000037"]
AF_READS = rf"^/(orders/({'|'.join(AF_SALES)})|packs/{AF_PACK})$"


def test_a_cart_slower_than_the_time_left_goes_to_the_state_machine_instead_of_outliving_the_run(
    call_api: Any, aws: Aws, meli: Any
) -> None:
    """A cart's sale reads its order, the pack and the other orders: more than the 4-request worst case the run's
    deadline allows an id. Each read answers after 0.3 s here (the tests' client waits 0.5 s), and the run has 3 s:
    HANDBACK_SECONDS are kept, so ML has 1 s. The order and the pack are read, the other orders are not asked for. The
    sale fails transiently, as when ML does not answer, and the relink state machine takes it (attempt 1), while the
    record succeeds in time."""
    meli.add_fault({"path": AF_READS, "kind": "latency", "ms": 300})
    _, submitted = submit(call_api, [AF_SALES[0]])
    [message] = queued(aws)
    assert run_worker(aws, [message], remaining_ms=3_000) == {"batchItemFailures": []}
    assert 1 <= meli.count("GET", AF_READS) < 4  # not every read of the cart: 2, unless the machine is slow
    [item] = job(call_api, submitted["job_id"])["items"]
    assert (item["sale_id"], item["outcome"], item["attempts"]) == (AF_SALES[0], "in_progress", 1)
    assert item["execution_arn"].split(":")[-1].startswith(f"relink-{AF_SALES[0]}-e1-")


def test_the_same_cart_with_the_time_it_needs_is_reflected_whole(call_api: Any, aws: Aws, meli: Any) -> None:
    meli.add_fault({"path": AF_READS, "kind": "latency", "ms": 300})
    _, submitted = submit(call_api, [AF_SALES[0]])
    assert run_worker(aws, queued(aws), remaining_ms=30_000) == {"batchItemFailures": []}
    assert meli.count("GET", AF_READS) >= 4  # its order, the pack, the two others
    [item] = job(call_api, submitted["job_id"])["items"]
    assert item["outcome"] == "reflected"
    status, pack, _ = call_api("GET", f"/connections/{C}/packs/{AF_PACK}")
    assert (status, pack["outcome"], sorted(pack["sale_ids"])) == (200, "reflected", AF_SALES)
