"""Issue 12, cases 3 and 6, through the real API and worker handlers on moto with DynamoDB's item-size rules
(devstack.moto_fidelity: every item counted as DynamoDB counts it, refused over 400 KB).

- Case 3: a job header used to store every rejected value with its message, and the idempotency record the whole
  answer: about 2,900 rejections took the header over 400 KB, the API failed (502) after the item rows were written.
  The header now keeps a sample, the count and the count by reason; the idempotency record keeps the answer without
  the list, and a replay derives the list again from the (same, hash-checked) request. At the largest request the API
  takes, both items stay far under the limit and a replay answers byte for byte the same.
- Case 6: the header's message count was written after the send (``set_messages``), a plain update that a settling
  transaction on the header refuses with ``TransactionConflictException``, which botocore does not retry: the request
  failed after its messages went out, Powertools dropped the idempotency record, and the client's retry with the same
  key made a second job of the same ids. The count is now part of the header written before the send, and header
  updates (the worker's ``mark_started``, a withdrawal's) are retried after a back-off.
"""

from __future__ import annotations

import json
import random
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.moto_fidelity import MAX_ITEM_BYTES, dynamodb_item_size
from tests.bulk.test_bulk import HEALTHY, C, job, queued, run_worker
from tests.conftest import Aws, api_event, lambda_context

JOBS = f"/connections/{C}/reprocessing-jobs"
HEADER = {"S": "#"}


LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024  # a synchronous invocation's response payload, API Gateway's proxy included
SIZES: dict[str, int] = {}


def _post(body: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """POST through the API handler; the status and the body exactly as sent (to compare replays byte for byte)."""
    from functions.api.app import lambda_handler

    response = lambda_handler(api_event("POST", JOBS, body=body, headers=headers), lambda_context())
    SIZES["lambda_response"] = len(json.dumps(response).encode())
    return int(response["statusCode"]), str(response["body"])


def _items(table: str) -> list[dict[str, Any]]:
    """Every item of a table in DynamoDB JSON, as DynamoDB measures it."""
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _junk(count: int, *, seed: int = 12) -> list[str]:
    """Values that neither compress nor look like a sale id: 80 random printable characters each (clipped to 64 in the
    answer, whose message quotes them), so the answer is as large as a request of that many values can make it."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "!#$%&'()*+-./:;<=>?@[]^_`{|}~"
    return ["x" + "".join(rng.choice(alphabet) for _ in range(79)) for _ in range(count)]


# --- case 3: bounded header, bounded idempotency record, whole answer ------------------------------------------------


def test_the_largest_request_fits_its_header_and_idempotency_record_and_replays_the_whole_answer(
    call_api: Any, aws: Aws
) -> None:
    """10,000 values (BULK_MAX_IDS), 9,999 of them rejected with long messages, one accepted (a request with no valid
    id writes nothing and stores no answer): the answer lists every rejection, the header and the idempotency record
    are each a few KB by DynamoDB's rules, and the replay with the same key answers exactly the first answer."""
    from functions.api.app import MAX_JOB_BODY_BYTES

    values = [HEALTHY[0], *_junk(9_999)]
    body = json.dumps({"sale_ids": values})
    assert len(body.encode()) <= MAX_JOB_BODY_BYTES
    key = {"Idempotency-Key": "largest-request"}

    status, first = _post(body, key)
    assert status == 202, first[:500]
    answer = json.loads(first)
    assert (answer["accepted"], answer["messages"], answer["rejected_count"]) == (1, 1, 9_999)
    assert len(answer["rejected"]) == 9_999  # every one, in the order sent, each with its reason and message
    assert [r["sale_id"][:63] for r in answer["rejected"]] == [v[:63] for v in values[1:]]
    assert all(r["reason"] == "invalid_sale_id" and r["message"] for r in answer["rejected"])

    from shared.jobs import REJECTED_SAMPLE

    (header,) = [i for i in _items(aws.env["JOBS_TABLE"]) if i["item_key"] == HEADER]
    (record,) = _items(aws.env["IDEMPOTENCY_TABLE"])
    header_size, record_size = dynamodb_item_size(header), dynamodb_item_size(record)
    print(
        f"\n{len(first):,}-byte answer ({SIZES['lambda_response']:,} B as the Lambda's response); "
        f"header {header_size:,} B, idempotency record {record_size:,} B by DynamoDB's rules"
    )
    assert SIZES["lambda_response"] < LAMBDA_RESPONSE_BYTES
    assert header_size < 40_000 and record_size < 2_000 and max(header_size, record_size) < MAX_ITEM_BYTES
    assert len(header["rejected"]["L"]) == REJECTED_SAMPLE and header["rejected_count"] == {"N": "9999"}
    assert record["status"] == {"S": "COMPLETED"} and "rejected" not in json.loads(record["data"]["S"])

    assert _post(body, key) == (202, first)  # the replay: the same answer to the byte, nothing queued again
    assert len(queued(aws)) == 1

    view = job(call_api, answer["job_id"])
    assert view["rejected"] == answer["rejected"][:REJECTED_SAMPLE]
    assert (view["rejected_count"], view["rejected_reasons"]) == (9_999, {"invalid_sale_id": 9_999})


def test_a_job_refused_by_dynamodb_leaves_no_item_behind_and_its_key_can_be_used_again(aws: Aws) -> None:
    """Items are written before the header (a header promises its items); if DynamoDB refuses the header (here as it
    refuses an item over 400 KB), the items already written are deleted before the failure goes up: no pending item
    holds an id for a job that does not exist, nothing is queued, and the client's retry with its key starts afresh."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.responses import DynamoHandler

    jobs_table = aws.env["JOBS_TABLE"]
    original = DynamoHandler.put_item
    refused: list[str] = []

    def put_item(self: Any) -> Any:
        item = self.body.get("Item", {})
        if self.body.get("TableName") == jobs_table and item.get("item_key") == HEADER:
            refused.append(item["job_id"]["S"])
            raise ItemSizeTooLarge()
        return original(self)

    body = json.dumps({"sale_ids": HEALTHY * 2 + ["MEL44031010011FMXDF01"]})  # 60 ids: items written in 3 batches
    key = {"Idempotency-Key": "refused-once"}
    with mock.patch.object(DynamoHandler, "put_item", put_item), pytest.raises(ClientError) as failed:
        _post(body, key)  # the Lambda fails: API Gateway answers 502
    assert failed.value.response["Error"]["Code"] == "ValidationException" and len(refused) == 1
    assert _items(jobs_table) == [] and queued(aws) == []

    status, answer = _post(body, key)
    assert status == 202 and json.loads(answer)["accepted"] == len(HEALTHY)
    assert len({i["job_id"]["S"] for i in _items(jobs_table) if not i["job_id"]["S"].startswith("lane#")}) == 1


# --- case 6: nothing written after the send; header updates retried -------------------------------------------------


@contextmanager
def header_held_by_transactions(aws: Aws, times: int) -> Iterator[list[str]]:
    """The next ``times`` UpdateItem calls on a job header meet a settling transaction on it: DynamoDB refuses them
    with TransactionConflictException (devstack.faults), which botocore does not retry."""
    from moto.dynamodb.responses import DynamoHandler

    from devstack.faults import _TransactionConflict

    jobs_table = aws.env["JOBS_TABLE"]
    original = DynamoHandler.update_item
    hits: list[str] = []
    lock = threading.Lock()

    def update_item(self: Any) -> Any:
        key = self.body.get("Key", {})
        if self.body.get("TableName") == jobs_table and key.get("item_key") == HEADER:
            with lock:
                fire = len(hits) < times
                if fire:
                    hits.append(key["job_id"]["S"])
            if fire:
                raise _TransactionConflict()
        return original(self)

    with mock.patch.object(DynamoHandler, "update_item", update_item):
        yield hits


def test_a_header_held_by_a_transaction_never_makes_a_keyed_submission_a_second_job(call_api: Any, aws: Aws) -> None:
    """The header's updates meet transactions twice. The submission writes no header update after its send, so the
    client (retrying a failed answer with its Idempotency-Key, as told) gets one job; the worker's mark_started meets
    both conflicts, writes again after a back-off, and every id settles once."""
    ids = HEALTHY + [str(2000009700000000 + n) for n in range(50)]  # 58 ids: two messages (ML knows 8)
    body = json.dumps({"sale_ids": ids})
    key = {"Idempotency-Key": "held-header"}
    answers: list[dict[str, Any]] = []
    with header_held_by_transactions(aws, times=2) as hits:
        for _ in range(3):
            try:
                status, answer, _ = call_api("POST", JOBS, body=body, headers=key)
            except ClientError:  # the Lambda failed (API Gateway: 502): the client sends the same request again
                continue
            assert status == 202, answer
            answers.append(answer)
            break
        call_api("POST", JOBS, body=body, headers=key)  # and once more, as a client that lost the answer would
        messages = queued(aws)
        bodies = [json.loads(m["Body"]) for m in messages]
        headers = [i for i in _items(aws.env["JOBS_TABLE"]) if i["item_key"] == HEADER]
        assert len(headers) == 1, f"{len(headers)} jobs for one keyed request"
        assert hits == []  # the submission made no header update at all
        sent = sorted(s for b in bodies for s in b["sale_ids"])
        assert sent == sorted(ids)  # each id once, in the job's two messages
        (submitted,) = answers
        assert {b["job_id"] for b in bodies} == {submitted["job_id"]} and submitted["messages"] == len(messages) == 2
        assert headers[0]["messages"] == {"N": "2"}  # counted in the header written before the send

        assert run_worker(aws, messages) == {"batchItemFailures": []}
        assert hits == [submitted["job_id"]] * 2  # mark_started met both conflicts and wrote again
    done = job(call_api, submitted["job_id"], limit="100")
    assert done["status"] == "completed" and done["settled"] == done["accepted"] == len(ids)
    assert sorted(i["sale_id"] for i in done["items"]) == sorted(ids)


@pytest.mark.parametrize("went_out", [0, 1])
def test_ids_never_queued_are_withdrawn_with_their_messages_in_one_header_update(
    call_api: Any, aws: Aws, monkeypatch: pytest.MonkeyPatch, went_out: int
) -> None:
    """Lanes off (``BulkLaneMessages`` 0, every message sent at submission): SQS takes ``went_out`` of a job's three
    messages and then fails. The ids of the others are withdrawn: their
    items deleted and the header's accepted and messages lowered in one update (which meets a settling transaction
    once and is written again), so the job still adds up and completes; with no message out, nothing of it stays.
    A job some of whose messages went out is answered (202) with the others' ids rejected as ``not_queued``, and a
    retry with the same Idempotency-Key answers the same job, never a second one."""
    from shared.bulk import QueueSendError
    from shared.queue import SqsBulkQueue

    monkeypatch.setenv("BULK_LANE_MESSAGES", "0")  # lanes off: every message is sent at submission
    original = SqsBulkQueue.send

    def send(self: SqsBulkQueue, messages: list[Any], **kwargs: Any) -> int:
        sent = original(self, messages[:went_out], **kwargs)
        raise QueueSendError("SQS failed (injected)", unsent=messages[sent:])

    monkeypatch.setattr(SqsBulkQueue, "send", send)
    ids = HEALTHY + [str(2000009700000000 + n) for n in range(112)]  # 120 ids: messages of 50, 50 and 20
    key = {"Idempotency-Key": f"partly-queued-{went_out}"}
    if not went_out:
        with header_held_by_transactions(aws, times=1) as hits:
            status, answer, _ = call_api("POST", JOBS, body=json.dumps({"sale_ids": ids}), headers=key)
        assert (status, answer["error"], answer["retryable"]) == (503, "queue_unavailable", True)
        assert _items(aws.env["JOBS_TABLE"]) == [] and hits == [] and queued(aws) == []
        return
    with header_held_by_transactions(aws, times=1) as hits:
        status, answer, _ = call_api("POST", JOBS, body=json.dumps({"sale_ids": ids}), headers=key)
    monkeypatch.setattr(SqsBulkQueue, "send", original)
    status_again, again, _ = call_api("POST", JOBS, body=json.dumps({"sale_ids": ids}), headers=key)
    items = _items(aws.env["JOBS_TABLE"])
    messages = queued(aws)
    assert len(messages) == went_out  # the retry queued nothing
    unqueued = [r for r in answer["rejected"] if r["reason"] == "not_queued"]
    assert status == status_again == 202 and again == answer
    assert (answer["accepted"], answer["messages"], answer["rejected_count"]) == (50, 1, 70)
    assert sorted(r["sale_id"] for r in unqueued) == sorted(ids[50:])
    assert len([i for i in items if i["item_key"] == HEADER]) == 1  # one job
    assert len(hits) == 1  # the withdrawal's update met a transaction and was written again
    (header,) = [i for i in items if i["item_key"] == HEADER]
    sent = json.loads(messages[0]["Body"])["sale_ids"]
    assert (header["accepted"], header["messages"]) == ({"N": str(len(sent))}, {"N": "1"})
    assert sorted(i["item_key"]["S"] for i in items if i["item_key"] != HEADER) == sorted(sent)
    assert run_worker(aws, messages) == {"batchItemFailures": []}
    done = job(call_api, hits[0], limit="100")
    assert done["status"] == "completed" and done["settled"] == done["accepted"] == len(sent)


def test_with_lanes_a_job_the_queue_refuses_at_submission_waits_held_and_the_sweep_sends_it(
    call_api: Any, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes on (the default): a job is accepted once its ledger is written, its messages included (held). SQS
    refusing every send at the submission loses nothing and rejects nothing: the answer is 202 with every id, the
    messages wait held, and the next error sweep's lane repair sends them once SQS is back (two, the lane's room;
    the third when one finishes)."""
    from shared.bulk import QueueSendError
    from shared.queue import SqsBulkQueue
    from tests.bulk.test_bulk import drain
    from tests.schedules.test_schedules import run_of, sweep

    original = SqsBulkQueue.send

    def refuse(self: SqsBulkQueue, messages: list[Any], **kwargs: Any) -> int:
        raise QueueSendError("SQS failed (injected)", unsent=messages)

    monkeypatch.setattr(SqsBulkQueue, "send", refuse)
    ids = HEALTHY + [str(2000009700000000 + n) for n in range(112)]  # 120 ids: messages of 50, 50 and 20
    status, answer, _ = call_api("POST", JOBS, body=json.dumps({"sale_ids": ids}))
    assert status == 202, answer
    assert (answer["accepted"], answer["messages"], answer["rejected"]) == (120, 3, [])
    assert queued(aws) == []
    held = [i for i in _items(aws.env["JOBS_TABLE"]) if i["item_key"]["S"].startswith("!m")]
    assert sorted(i["lane_state"]["S"] for i in held) == ["held"] * 3

    monkeypatch.setattr(SqsBulkQueue, "send", original)
    swept = run_of(sweep())
    assert swept["lane_released"] == 2
    ran = [json.loads(m["Body"]) for m in drain(aws)]
    # The sweep's own retry job (the scenario's listed sale) is a schedule's: it goes before the third message.
    assert [(b["job_id"] == swept["job_id"], len(b["sale_ids"])) for b in ran] == [
        (False, 50),
        (False, 50),
        (True, 1),
        (False, 20),
    ]
    done = job(call_api, answer["job_id"], limit="100")
    assert done["status"] == "completed" and done["settled"] == done["accepted"] == 120
