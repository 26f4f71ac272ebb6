"""Each connection's lane on the bulk queue (shared.lanes, issue 14): a seller's backlog waits in the job ledger, not
on the shared queue, so another seller's first message is never behind it.

Through the real API handler and worker (whole events) on moto's tables and queue created from template.yaml, with
two sellers at once; and a hypothesis state machine that chooses the interleavings of releases, finishes,
redeliveries, crashes between two writes and repairs, on the real DynamoDB store and SQS queue.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from devstack.template import load_template
from shared.lanes import (
    SEND_GRACE_SECONDS,
    SENT_LOST_AFTER_SECONDS,
    STARTED_LOST_AFTER_SECONDS,
    LaneMessage,
    Lanes,
    LaneState,
    Slot,
)
from shared.queue import LANE_ATTRIBUTE, SqsBulkQueue
from shared.stores.lanes import DynamoLaneStore, held_message_item
from tests.bulk.test_bulk import LANE, drain, job, queued, run_worker
from tests.conftest import Aws

A, B = "mla-main", "mlb-second"
VISIBILITY_SECONDS = 720  # BulkQueue's VisibilityTimeout
B_SALE = "2000009120000013"  # mlb-second's own order in the default scenario: reflected under it


def submit_for(call_api: Any, connection_id: str, sale_ids: list[str]) -> dict[str, Any]:
    status, body, _ = call_api(
        "POST", f"/connections/{connection_id}/reprocessing-jobs", body=json.dumps({"sale_ids": sale_ids})
    )
    assert status == 202, body
    return dict(body)


def lane_of(message: dict[str, Any]) -> str:
    return str(message["MessageAttributes"][LANE_ATTRIBUTE]["StringValue"])


def test_a_small_seller_is_never_queued_behind_a_big_sellers_backlog(call_api: Any, aws: Aws) -> None:
    big = submit_for(call_api, A, [str(2000009500000000 + n) for n in range(300)])  # 6 messages
    small = submit_for(call_api, B, [B_SALE])
    on_queue = queued(aws)
    by_connection = sorted(json.loads(m["Body"])["connection_id"] for m in on_queue)
    assert by_connection == [A] * LANE + [B]  # the big job's other 4 messages wait in the ledger
    # The small seller's message runs first (it is on the queue now) and its job completes; the big one goes on.
    (b_message,) = [m for m in on_queue if json.loads(m["Body"])["connection_id"] == B]
    assert run_worker(aws, [b_message]) == {"batchItemFailures": []}
    status, view, _ = call_api("GET", f"/connections/{B}/reprocessing-jobs/{small['job_id']}")
    assert status == 200 and view["status"] == "completed" and view["items"][0]["outcome"] == "reflected"
    # Each of the big job's messages that finishes sends the next; never more than the lane's room at once.
    batch = [m for m in on_queue if m is not b_message]
    seen = 0
    while batch:
        assert len(batch) <= LANE
        assert run_worker(aws, batch) == {"batchItemFailures": []}
        seen += len(batch)
        batch = queued(aws)
    assert seen == 6
    assert job(call_api, big["job_id"])["status"] == "completed"


def test_a_message_handed_back_keeps_its_slot_and_the_next_waits(
    call_api: Any, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run out of time hands its ids back in a new message with the same lane ref: the lane does not count it
    twice, and releases nothing until the handed-back message finishes."""
    from functions.bulk_worker import app

    submit_for(call_api, A, [str(2000009510000000 + n) for n in range(150)])  # 3 messages
    first = queued(aws)
    assert len(first) == LANE
    with monkeypatch.context() as patch:
        patch.setattr(app, "seconds_left", lambda context: lambda: 0.0)  # no time: one id, the rest back
        assert run_worker(aws, first[:1]) == {"batchItemFailures": []}
    back = queued(aws)
    assert [lane_of(m) for m in back] == [lane_of(first[0])]  # the hand-back, nothing released
    ran = drain(aws, back + first[1:])
    assert sum(len(json.loads(m["Body"])["sale_ids"]) for m in ran) == 49 + 50 + 50


def test_a_slot_is_taken_for_lost_only_after_the_queue_gave_up_on_its_message() -> None:
    """Started: not received again within the visibility timeout, so it went to the DLQ. Sent and never received:
    past the queue's retention."""
    queue = load_template()["Resources"]["BulkQueue"]["Properties"]
    assert queue["VisibilityTimeout"] < STARTED_LOST_AFTER_SECONDS
    assert queue["MessageRetentionPeriod"] < SENT_LOST_AFTER_SECONDS


# --- interleavings ---------------------------------------------------------------------------------------------------


class LaneMachine(RuleBasedStateMachine):
    """Two connections' lanes under every order of: submissions, deliveries, finishes, redelivered finishes, a
    releaser dying between taking a slot and sending, a worker dying between marking done and freeing, messages lost
    to the dead-letter queue, and repairs (the error sweep). Invariants: a lane never holds more than its room; and,
    drained, every message was delivered at least once and finished, and every slot is free."""

    LIMIT = 2

    def __init__(self) -> None:
        super().__init__()
        self.table = boto3.resource("dynamodb").Table(_JOBS_TABLE[0])
        self.sqs = boto3.client("sqs")
        self.url = self.sqs.create_queue(QueueName=f"lanes-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        self.store = DynamoLaneStore(self.table)
        self.now = 1_000_000.0
        self.lanes = Lanes(self.store, SqsBulkQueue(self.sqs, self.url), limit=self.LIMIT, clock=lambda: self.now)
        run = uuid.uuid4().hex[:8]
        self.connections = [f"a-{run}", f"b-{run}"]
        self.messages: dict[str, LaneMessage] = {}
        self.in_worker: list[tuple[str, str]] = []  # (connection, ref) received, not finished
        self.finished: list[tuple[str, str]] = []
        self.delivered: set[str] = set()
        self.lost: set[str] = set()
        self._jobs = itertools.count()

    def _receive(self) -> None:
        while got := self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for m in got:
                body = json.loads(m["Body"])
                self.in_worker.append((body["connection_id"], lane_of(m)))
                self.delivered.add(lane_of(m))
                self.lanes.started(body["connection_id"], lane_of(m))  # as the worker's run does first
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])

    @rule(which=st.integers(0, 1), count=st.integers(1, 4))
    def submit(self, which: int, count: int) -> None:
        connection = self.connections[which]
        job_id = f"job{next(self._jobs):03d}-{connection}"
        for n in range(count):
            message = LaneMessage(job_id=job_id, number=n, connection_id=connection, sale_ids=[f"{n}"])
            self.messages[message.ref] = message
            item = held_message_item(message, priority=1, created_at=_at(self.now), expires_at=2_000_000_000)
            self.table.put_item(Item=item)
        self.lanes.release(connection)
        self._receive()

    @rule(pick=st.integers(0, 50))
    def finish(self, pick: int) -> None:
        if not self.in_worker:
            return
        connection, ref = self.in_worker.pop(pick % len(self.in_worker))
        self.lanes.finished(connection, ref)
        self.finished.append((connection, ref))
        self._receive()

    @rule(pick=st.integers(0, 50))
    def redelivered_finish(self, pick: int) -> None:
        """SQS delivers a finished message again: its run skips everything and finishes it again."""
        if not self.finished:
            return
        connection, ref = self.finished[pick % len(self.finished)]
        self.lanes.finished(connection, ref)
        self._receive()

    @rule(which=st.integers(0, 1))
    def releaser_dies_after_taking_a_slot(self, which: int) -> None:
        connection = self.connections[which]
        held = self.store.held(connection, limit=1)
        if held:
            self.store.take(connection, held[0].ref, limit=self.LIMIT, now=self.now)

    @rule(pick=st.integers(0, 50))
    def worker_dies_between_done_and_free(self, pick: int) -> None:
        if not self.in_worker:
            return
        connection, ref = self.in_worker.pop(pick % len(self.in_worker))
        self.store.finish(ref)
        self.finished.append((connection, ref))

    @rule(pick=st.integers(0, 50))
    def message_lost_to_the_dead_letter_queue(self, pick: int) -> None:
        if not self.in_worker:
            return
        _, ref = self.in_worker.pop(pick % len(self.in_worker))
        self.lost.add(ref)

    @rule(
        which=st.integers(0, 1),
        wait=st.sampled_from(
            [1.0, SEND_GRACE_SECONDS + 1, STARTED_LOST_AFTER_SECONDS + 1, SENT_LOST_AFTER_SECONDS + 1]
        ),
    )
    def sweep_repairs(self, which: int, wait: float) -> None:
        self.now += wait
        if wait > VISIBILITY_SECONDS:
            # No run lasts that long (120 s at most): SQS made each message in a worker visible again and a new run
            # received it. The ones lost to the DLQ are not among them.
            for connection, ref in self.in_worker:
                self.lanes.started(connection, ref)
        self.lanes.repair(self.connections[which])
        self._receive()

    @invariant()
    def a_lane_never_holds_more_than_its_room(self) -> None:
        for connection in self.connections:
            assert len(self.store.in_flight(connection)) <= self.LIMIT
            busy = {ref for c, ref in self.in_worker if c == connection}
            assert len(busy) <= self.LIMIT

    def teardown(self) -> None:
        try:
            for _ in range(100):
                # The worker finishes what it holds; the sweep repairs, past every grace and loss window.
                while self.in_worker:
                    connection, ref = self.in_worker.pop(0)
                    self.lanes.finished(connection, ref)
                    self._receive()
                self.now += SENT_LOST_AFTER_SECONDS + 1
                for connection in self.connections:
                    self.lanes.repair(connection)
                self._receive()
                if not self.in_worker and not any(self.store.held(c, limit=1) for c in self.connections):
                    break
            for connection in self.connections:
                assert self.store.held(connection, limit=1) == [], "a message was never sent"
                assert self.store.in_flight(connection) == {}, "a slot stayed taken"
            for ref in self.messages:
                message = self.store.message(ref)
                assert message is not None
                assert ref in self.delivered, f"{ref} was never delivered"
                # A lost message rests in the DLQ (a person redrives it); every other one finished.
                assert ref in self.lost or message.state is LaneState.DONE, (ref, message.state)
        finally:
            self.sqs.delete_queue(QueueUrl=self.url)


_JOBS_TABLE: list[str] = []


def _at(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def test_lanes_under_every_interleaving(aws: Aws) -> None:
    _JOBS_TABLE[:] = [aws.env["JOBS_TABLE"]]
    run_state_machine_as_test(
        LaneMachine,
        settings=settings(
            max_examples=25,  # about a minute on this machine; `make soak` is where long runs belong
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


def test_take_is_refused_when_full_and_says_already_for_a_taken_ref(aws: Aws) -> None:
    store = DynamoLaneStore(boto3.resource("dynamodb").Table(aws.env["JOBS_TABLE"]))
    assert store.take("c1", "j:00000", limit=2, now=1.0) is Slot.TAKEN
    assert store.take("c1", "j:00000", limit=2, now=2.0) is Slot.ALREADY
    assert store.take("c1", "j:00001", limit=2, now=3.0) is Slot.TAKEN
    assert store.take("c1", "j:00002", limit=2, now=4.0) is Slot.FULL
    assert store.take("c2", "k:00000", limit=2, now=5.0) is Slot.TAKEN  # another connection: its own lane
    store.free("c1", "j:00000")
    store.free("c1", "j:00000")  # twice: no error, nothing else freed
    assert store.in_flight("c1") == {"j:00001": 3.0}
