"""Bulk reprocessing through the real API handler and the real worker handler (moto SQS, tables from the template,
the simulated Mercado Libre). Worker events are built from the messages moto's queue really holds.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest

from devstack.simulator.server import MeliSimulator
from devstack.sqs_poller import sqs_record
from shared.bulk import BulkMessage, BulkService, MessageReport
from shared.wiring import build_bulk_service
from tests.conftest import Aws, lambda_context

C = "mla-main"
HEALTHY = [
    "2000009101000011",
    "2000009101000021",
    "2000009101000031",
    "2000009101000041",
    "2000009101000051",
    "2000009101000061",
    "2000009101000071",
    "2000009101000081",
]
ALREADY_REFLECTED, CANCELLED, NOT_SYNCED = "2000009102000015", "2000009103000012", "2000009108000018"
LISTED_TIMEOUT, ALWAYS_503 = "2000009109000015", "2000009112000016"
CART_PACK = "2000006105000019"
LANE = 2  # BulkLaneMessages' default: a connection's messages on the queue or in a worker at once


def submit(call_api: Any, sale_ids: Any) -> tuple[int, dict[str, Any]]:
    status, body, _ = call_api("POST", f"/connections/{C}/reprocessing-jobs", body=json.dumps({"sale_ids": sale_ids}))
    return status, body


def queued(aws: Aws) -> list[dict[str, Any]]:
    """Every message on the bulk queue, as moto holds it (received, so invisible until deleted or released)."""
    sqs = boto3.client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=aws.env["BULK_QUEUE_URL"],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        if not got.get("Messages"):
            return out
        out += got["Messages"]


def worker_event(aws: Aws, messages: list[dict[str, Any]]) -> dict[str, Any]:
    arn = boto3.client("sqs").get_queue_attributes(QueueUrl=aws.env["BULK_QUEUE_URL"], AttributeNames=["QueueArn"])
    return {"Records": [sqs_record(m, arn["Attributes"]["QueueArn"], "us-east-1") for m in messages]}


def run_worker(aws: Aws, messages: list[dict[str, Any]]) -> dict[str, Any]:
    from functions.bulk_worker.app import lambda_handler

    result: dict[str, Any] = lambda_handler(
        worker_event(aws, messages), lambda_context("sales-recovery-test-bulk-worker")
    )
    return result


def queued_all(aws: Aws) -> list[dict[str, Any]]:
    """Every message the jobs have, the held ones included: each message received gives its lane slot up at once (as
    if it had finished), so the lanes release the rest. For tests about what was queued, not about lanes; the worker
    may run the messages afterwards (its own finish then changes nothing)."""
    import os

    from shared.lanes import Lanes
    from shared.queue import LANE_ATTRIBUTE, SqsBulkQueue
    from shared.stores.lanes import DynamoLaneStore

    lanes = Lanes(
        DynamoLaneStore(boto3.resource("dynamodb").Table(aws.env["JOBS_TABLE"])),
        SqsBulkQueue(boto3.client("sqs"), aws.env["BULK_QUEUE_URL"]),
        limit=int(os.environ.get("BULK_LANE_MESSAGES", "2")),
        clock=time.time,
    )
    out: list[dict[str, Any]] = []
    batch = queued(aws)
    while batch:
        out += batch
        for message in batch:
            lane = message.get("MessageAttributes", {}).get(LANE_ATTRIBUTE)
            if lane is not None:
                lanes.finished(json.loads(message["Body"])["connection_id"], lane["StringValue"])
        batch = queued(aws)
    return out


def drain(aws: Aws, messages: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run the worker on what is queued, and again on what the finished messages' lanes released, until the queue is
    empty; returns every message run, in order."""
    ran: list[dict[str, Any]] = []
    batch = queued(aws) if messages is None else messages
    while batch:
        assert run_worker(aws, batch) == {"batchItemFailures": []}
        ran += batch
        batch = queued(aws)
    return ran


def job(call_api: Any, job_id: str, **query: str) -> dict[str, Any]:
    status, body, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{job_id}", query=query or None)
    assert status == 200, body
    return dict(body)


# --- submission ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "messages"), [(1, [1]), (50, [50]), (51, [50, 1]), (120, [50, 50, 20])])
def test_accepted_ids_travel_in_messages_of_at_most_50(
    call_api: Any, aws: Aws, count: int, messages: list[int]
) -> None:
    """The connection's lane (shared.lanes, 2 messages by default) sends what it has room for at once; each message
    that finishes sends the next one held in the ledger, until every id went out once."""
    ids = [str(2000009400000000 + n) for n in range(count)]
    status, body = submit(call_api, ids)
    assert status == 202
    assert (body["accepted"], body["rejected"], body["messages"]) == (count, [], len(messages))
    first = queued(aws)
    assert [len(json.loads(m["Body"])["sale_ids"]) for m in first] == messages[:LANE]  # the rest wait, held
    assert job(call_api, body["job_id"])["status"] == "pending"
    sent = [json.loads(m["Body"]) for m in drain(aws, first)]
    assert [len(m["sale_ids"]) for m in sent] == messages
    assert all(set(m) == {"job_id", "connection_id", "sale_ids"} for m in sent)
    assert {m["job_id"] for m in sent} == {body["job_id"]} and {m["connection_id"] for m in sent} == {C}
    assert sorted(s for m in sent for s in m["sale_ids"]) == sorted(ids)
    assert job(call_api, body["job_id"])["status"] == "completed"


def test_comma_text_is_trimmed_deduplicated_and_validated(call_api: Any, aws: Aws) -> None:
    text = f" {HEALTHY[0]},{HEALTHY[1]} ,, {HEALTHY[0]},abc, MEL44031010011FMXDF01 ,-5,{HEALTHY[2]}\n{'9' * 30}"
    status, body = submit(call_api, text)
    assert status == 202
    assert body["accepted"] == 3 and body["duplicates"] == 1 and body["messages"] == 1
    rejected = {r["sale_id"]: r for r in body["rejected"]}
    assert set(rejected) == {"abc", "MEL44031010011FMXDF01", "-5", "9" * 30}
    assert rejected["MEL44031010011FMXDF01"]["reason"] == "not_a_sale_id"
    assert rejected["MEL44031010011FMXDF01"]["identifier_kind"] == "tracking"
    assert rejected["abc"]["reason"] == "invalid_sale_id" and "digits only" in rejected["abc"]["message"]


def test_json_numbers_are_ids_but_other_json_values_are_rejected(call_api: Any) -> None:
    status, body = submit(call_api, [int(HEALTHY[0]), HEALTHY[1], 1.5, True, None, ["x"], {"id": 1}])
    assert status == 202 and body["accepted"] == 2
    assert [r["reason"] for r in body["rejected"]] == ["invalid_sale_id"] * 5


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"sale_ids": []}, 422, "no_sale_ids"),
        ({"sale_ids": ""}, 422, "no_sale_ids"),
        ({"sale_ids": " , ,"}, 422, "no_sale_ids"),
        ({"sale_ids": 123}, 422, "no_sale_ids"),
        ({"sale_ids": [str(n) for n in range(1, 10_002)]}, 422, "too_many_sale_ids"),
        ({}, 400, "invalid_body"),
        ({"sale_ids": ["1"], "priority": "high"}, 400, "invalid_body"),
    ],
)
def test_bad_bulk_requests_write_nothing(call_api: Any, aws: Aws, body: Any, status: int, error: str) -> None:
    got, answer, _ = call_api("POST", f"/connections/{C}/reprocessing-jobs", body=json.dumps(body))
    assert (got, answer["error"]) == (status, error), answer
    assert answer["message"]
    assert queued(aws) == []
    assert aws.table("JOBS_TABLE").scan()["Items"] == []


def test_an_unknown_job_is_404_and_a_malformed_id_400(call_api: Any) -> None:
    status, body, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{'0' * 32}")
    assert (status, body["error"]) == (404, "job_not_found")
    status, body, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/../../x")
    assert status in (400, 404)


# --- the worker -----------------------------------------------------------------------------------------------------


def test_a_job_settles_every_id_once_and_its_counts_add_up(call_api: Any, aws: Aws, meli: MeliSimulator) -> None:
    ids = [*HEALTHY, ALREADY_REFLECTED, CANCELLED, NOT_SYNCED, LISTED_TIMEOUT, CART_PACK]
    _, submitted = submit(call_api, ids)
    messages = queued(aws)
    meli.reset_log()
    response = run_worker(aws, messages)
    assert response == {"batchItemFailures": []}
    view = job(call_api, submitted["job_id"])
    assert view["status"] == "completed"
    outcomes = {item["sale_id"]: (item["outcome"], item.get("reason")) for item in view["items"]}
    assert outcomes == {
        **dict.fromkeys(HEALTHY, ("reflected", None)),
        ALREADY_REFLECTED: ("already_reflected", None),
        CANCELLED: ("not_reflectable", "sale_cancelled"),
        NOT_SYNCED: ("not_reflectable", "product_not_synced"),
        LISTED_TIMEOUT: ("reflected", None),
        CART_PACK: ("reflected", None),  # a cart's pack id is the cart: reprocessed whole (issue 15)
    }
    counts = view["counts"]
    assert sum(counts.values()) == view["accepted"] == len(ids)
    assert (counts["reflected"], counts["already_reflected"], counts["not_reflectable"]) == (10, 1, 2)
    # One successful ML read per healthy sale: bulk adds no requests of its own.
    healthy_reads = sum(meli.count(path_regex=f"^/orders/{s}$", status=200) for s in HEALTHY)
    assert healthy_reads == len(HEALTHY)


def test_a_redelivered_message_duplicates_nothing(call_api: Any, aws: Aws) -> None:
    _, submitted = submit(call_api, HEALTHY[:4])
    messages = queued(aws)
    run_worker(aws, messages)
    first = job(call_api, submitted["job_id"])
    run_worker(aws, messages)  # SQS delivers at least once
    again = job(call_api, submitted["job_id"])
    assert again["counts"] == first["counts"] and again["counts"]["reflected"] == 4
    rows = [r for r in aws.table("SALES_TABLE").scan()["Items"] if r["sale_id"] in HEALTHY[:4]]
    assert len(rows) == 4 and {int(r["version"]) for r in rows} == {1}  # each written once, never again


def test_a_poison_message_fails_alone(call_api: Any, aws: Aws) -> None:
    _, submitted = submit(call_api, HEALTHY[:2])
    good = queued(aws)
    poison = dict(good[0], MessageId="poison-1", Body='{"job_id": "x", "sale_ids": "not a list"}')
    response = run_worker(aws, [poison, *good])
    assert response == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}
    assert job(call_api, submitted["job_id"])["counts"]["reflected"] == 2


def test_a_transient_failure_continues_in_the_state_machine_with_its_attempt_counted(call_api: Any, aws: Aws) -> None:
    _, submitted = submit(call_api, [HEALTHY[0], ALWAYS_503])
    run_worker(aws, queued(aws))
    view = job(call_api, submitted["job_id"])
    assert view["status"] == "in_progress"
    assert view["counts"]["reflected"] == 1 and view["counts"]["in_progress"] == 1
    handed = next(i for i in view["items"] if i["sale_id"] == ALWAYS_503)
    assert handed["outcome"] == "in_progress" and handed["attempts"] == 1 and handed["episode"] == 1
    assert handed["execution_arn"].split(":")[-1].startswith(f"relink-{ALWAYS_503}-e1-")  # the sale's episode 1
    execution = boto3.client("stepfunctions").describe_execution(executionArn=handed["execution_arn"])
    assert json.loads(execution["input"]) == {"connection_id": C, "sale_id": ALWAYS_503, "attempts": 1}
    _, state, _ = call_api("GET", f"/connections/{C}/sales/{ALWAYS_503}")
    assert state["latest_execution"]["execution_arn"] == handed["execution_arn"]


def test_job_items_paginate(call_api: Any, aws: Aws) -> None:
    _, submitted = submit(call_api, HEALTHY)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = job(call_api, submitted["job_id"], limit="3", **({"cursor": cursor} if cursor else {}))
        seen += [item["sale_id"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted(HEALTHY)


def test_a_retried_submission_with_the_same_idempotency_key_answers_the_first_job(call_api: Any, aws: Aws) -> None:
    headers = {"Idempotency-Key": "backoffice-batch-17"}
    body = json.dumps({"sale_ids": HEALTHY[:3]})
    first = call_api("POST", f"/connections/{C}/reprocessing-jobs", body=body, headers=headers)
    again = call_api("POST", f"/connections/{C}/reprocessing-jobs", body=body, headers=headers)
    assert first[0] == again[0] == 202
    assert again[1]["job_id"] == first[1]["job_id"]
    assert len(queued(aws)) == 1  # one message: the retry queued nothing
    other = call_api(
        "POST", f"/connections/{C}/reprocessing-jobs", body=json.dumps({"sale_ids": HEALTHY[3:5]}), headers=headers
    )
    assert (other[0], other[1]["error"]) == (422, "idempotency_key_reused")
    fresh = call_api("POST", f"/connections/{C}/reprocessing-jobs", body=body)
    assert fresh[0] == 202 and fresh[1]["job_id"] != first[1]["job_id"]  # without a key, a new job


def test_a_message_for_a_job_that_does_not_exist_fails_and_writes_nothing(call_api: Any, aws: Aws) -> None:
    """Never a stub header or a sale import for a job the API did not write: the message fails toward the DLQ."""
    submit(call_api, HEALTHY[:1])
    template = queued(aws)[0]
    stray = dict(
        template,
        MessageId="stray-1",
        Body=json.dumps({"job_id": "f" * 32, "connection_id": C, "sale_ids": [HEALTHY[1]]}),
    )
    assert run_worker(aws, [stray]) == {"batchItemFailures": [{"itemIdentifier": "stray-1"}]}
    jobs = aws.table("JOBS_TABLE").scan()["Items"]
    assert not [item for item in jobs if item["job_id"] == "f" * 32]
    assert "Item" not in aws.table("SALES_TABLE").get_item(Key={"connection_id": C, "sale_id": HEALTHY[1]})


def test_the_records_of_one_invocation_run_side_by_side_on_one_service(
    call_api: Any, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three messages in one event: all settle, their processing overlaps, and a cold start builds the service once
    (concurrent first calls of an lru_cache would each build their own clients and quota bucket)."""
    _, submitted = submit(call_api, HEALTHY)
    message = queued(aws)[0]
    body = json.loads(message["Body"])
    split = [  # the job's one message as three, the shape a larger job has
        dict(message, MessageId=f"part-{n}", Body=json.dumps({**body, "sale_ids": body["sale_ids"][n::3]}))
        for n in range(3)
    ]
    running, overlap, lock = [0], [0], threading.Lock()
    original = BulkService.process

    def watched(self: BulkService, message: BulkMessage, **options: Any) -> MessageReport:
        with lock:
            running[0] += 1
            overlap[0] = max(overlap[0], running[0])
        try:
            time.sleep(0.2)  # long enough for the siblings to start
            return original(self, message, **options)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(BulkService, "process", watched)
    build_bulk_service.cache_clear()
    assert run_worker(aws, split) == {"batchItemFailures": []}
    assert overlap[0] == 3
    assert build_bulk_service.cache_info().misses == 1
    view = job(call_api, submitted["job_id"])
    assert view["status"] == "completed" and view["counts"]["reflected"] == len(HEALTHY)
