"""Issue #12, case 4: the bulk worker knows its deadline.

At the template's defaults a worker invocation could outlive its timeout (BatchSize 5 x 50 ids at about 2 requests
per second each); a timed-out invocation returns its whole batch, three receives put it in the DLQ. Here the worker's
time is short (its ``Timeout`` lowered on the deployed function, as an operator would; the quota of the simulated ML
makes 50 ids take longer than that) and timeouts are enforced (``devstack.lambdas``): the worker takes what its time
covers, sends the rest back as a new message of the same shape, and its record succeeds, so no receive is spent, no
invocation times out, and the job ends with every id terminal and nothing in the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.sqs_poller import SqsPoller, sqs_record
from devstack.stack import EmbeddedStack
from tests.stack.support import C, running_stack, stack_scenario, wait_for_job

pytestmark = pytest.mark.stack

WORKER_TIMEOUT = 8  # seconds; the template's 120 s, scaled down with the quota so that the test takes seconds
QUOTA = 20.0  # ML requests per second of the simulator (the stack's limiter takes 90 %): 50 unknown ids need > 8 s
UNKNOWN = 2000009700000000  # ids ML does not know: an order, a pack and a shipment look-up each, then blocked


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(
        stack_scenario(quota=QUOTA), poll_queues=False, meli_max_tries=1, enforce_timeouts=True
    ) as running:
        running.aws.client("lambda").update_function_configuration(
            FunctionName=running.aws.function_name("BulkWorkerFunction"), Timeout=WORKER_TIMEOUT
        )
        yield running


def submit(stack: EmbeddedStack, sale_ids: list[str]) -> str:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as http:
        response = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": sale_ids})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def job_view(stack: EmbeddedStack, job_id: str) -> dict[str, Any]:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as http:
        body: dict[str, Any] = http.get(f"/connections/{C}/reprocessing-jobs/{job_id}", params={"limit": "1000"}).json()
    return body


def receive_one(stack: EmbeddedStack) -> dict[str, Any] | None:
    sqs = stack.aws.client("sqs")
    got = sqs.receive_message(
        QueueUrl=stack.aws.physical_id("BulkQueue"),
        MaxNumberOfMessages=1,
        WaitTimeSeconds=0,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    return got[0] if got else None


def deliver(stack: EmbeddedStack, message: dict[str, Any]) -> Any:
    """One invocation of the worker with the message, as the event source mapping makes it (timeouts enforced)."""
    sqs = stack.aws.client("sqs")
    url = stack.aws.physical_id("BulkQueue")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return stack.aws.runtime.invoke("BulkWorkerFunction", {"Records": [sqs_record(message, arn, stack.aws.region)]})


def pending(view: dict[str, Any]) -> list[str]:
    return [i["sale_id"] for i in view["items"] if i["outcome"] == "pending"]


def handbacks(stack: EmbeddedStack) -> int:
    """SendMessage calls the worker made (each authorised against its own role by devstack.iam)."""
    assert stack.aws.iam is not None
    return sum(
        n
        for (function, action, _resource, allowed), n in stack.aws.iam.checked().items()
        if function == "BulkWorkerFunction" and action == "sqs:SendMessage" and allowed
    )


def test_a_short_invocation_settles_what_fits_and_hands_the_rest_back_without_spending_a_receive(
    stack: EmbeddedStack,
) -> None:
    ids = [str(UNKNOWN + n) for n in range(50)]
    job_id = submit(stack, ids)
    sqs = stack.aws.client("sqs")
    url = stack.aws.physical_id("BulkQueue")
    bodies: list[dict[str, Any]] = []
    pending_before: list[list[str]] = []
    original: dict[str, Any] | None = None
    while (message := receive_one(stack)) is not None:
        assert len(bodies) < 10, "the job never ended"
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"  # every message is fresh: no receive spent
        original = original or message
        bodies.append(json.loads(message["Body"]))
        pending_before.append(pending(job_view(stack, job_id)))
        answer = deliver(stack, message)  # raises LambdaTimedOut if the worker overran its timeout
        assert answer == {"batchItemFailures": []}
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])  # the mapping deletes a success

    assert len(bodies) >= 2, "the quota should make 50 ids outlast one short invocation"
    assert bodies[0] == {"job_id": job_id, "connection_id": C, "sale_ids": ids}
    for before, after in zip(pending_before, bodies[1:], strict=False):
        # Each message handed back is the job's message shape, for exactly the ids the previous run did not take,
        # in their order; the run before it settled the rest.
        assert set(after) == {"job_id", "connection_id", "sale_ids"}
        assert (after["job_id"], after["connection_id"]) == (job_id, C)
        assert after["sale_ids"] == [s for s in before if s in set(after["sale_ids"])]
        assert 0 < len(after["sale_ids"]) < len(before)
    view = job_view(stack, job_id)
    assert view["status"] == "completed"
    assert sum(view["counts"].values()) == view["accepted"] == 50  # each id settled exactly once
    assert {i["outcome"] for i in view["items"]} == {"not_reflectable"}  # terminal: ML knows none of them

    # SQS may deliver the first message again: it settles nothing twice, costs no ML request, hands nothing back.
    assert original is not None
    requests, sent = stack.meli.count(), handbacks(stack)
    assert deliver(stack, original) == {"batchItemFailures": []}
    assert job_view(stack, job_id)["counts"] == view["counts"]
    assert (stack.meli.count(), handbacks(stack)) == (requests, sent)
    assert receive_one(stack) is None

    stats = stack.aws.runtime.stats["BulkWorkerFunction"]
    print(stats.line())
    assert stats.timeouts == 0 and stats.timeout == WORKER_TIMEOUT and stats.longest < WORKER_TIMEOUT
    assert handbacks(stack) == len(bodies) - 1  # each hand-back authorised by the worker's role (SQSSendMessagePolicy)


def test_a_job_driven_by_the_poller_ends_with_every_id_terminal_and_an_empty_dlq(stack: EmbeddedStack) -> None:
    """The template's mapping (BatchSize, MaximumConcurrency) with timeouts enforced: two messages, one invocation."""
    ids = [str(UNKNOWN + 1000 + n) for n in range(80)]
    sent_before = handbacks(stack)
    poller = SqsPoller(stack.aws).start()
    try:
        job_id = submit(stack, ids)
        assert stack.api is not None
        with httpx.Client(base_url=stack.api.url, timeout=30) as http:
            view = wait_for_job(http, job_id, timeout=90)
        poller.wait_idle(timeout=30)
    finally:
        poller.stop()
    assert view["status"] == "completed" and sum(view["counts"].values()) == view["accepted"] == 80
    assert poller.timeouts == 0 and handbacks(stack) > sent_before
    dlq = stack.aws.physical_id("BulkDeadLetterQueue")
    attrs = stack.aws.client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"
    stats = stack.aws.runtime.stats["BulkWorkerFunction"]
    print(stats.line())
    assert stats.timeouts == 0 and stats.longest < WORKER_TIMEOUT
