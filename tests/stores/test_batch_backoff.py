"""Issue 12, case 10: what a batch call leaves undone (DynamoDB's UnprocessedKeys / UnprocessedItems, SQS
SendMessageBatch's Failed entries) goes again after a capped exponential back-off with full jitter, for a bounded
number of rounds; what is still left then raises, naming every key, item or message that was not read, written or
sent. The partial answers come from moto through devstack.faults, as DynamoDB and SQS give them.

The rounds record their waits instead of sleeping them; their jitter returns the ceiling, so the recorded waits are
the back-off's growth itself (``test_rounds_wait_a_full_jitter_draw_under_a_capped_ceiling`` checks the draw).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.faults import dynamodb_partial_batches, sqs_partial_batches
from shared.backoff import Rounds
from shared.bulk import BulkMessage, QueueSendError
from shared.queue import SqsBulkQueue
from shared.stores.base import StateWriteFailed
from shared.stores.dynamo import BatchReadIncomplete, BatchWriteIncomplete, batch_get, batch_write
from tests.stores.conftest import table

CEILINGS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]  # base 50 ms, doubling, capped at 1 s


def recording(tries: int = 6) -> tuple[Rounds, list[float]]:
    waits: list[float] = []
    return Rounds(tries=tries, sleep=waits.append, jitter=lambda ceiling: ceiling), waits


def test_rounds_wait_a_full_jitter_draw_under_a_capped_ceiling() -> None:
    waits: list[float] = []
    rng = random.Random(3)
    rounds = Rounds(tries=8, sleep=waits.append, jitter=lambda ceiling: rng.uniform(0, ceiling))
    assert list(rounds) == list(range(8))  # no wait before the first try, one before each of the others
    assert len(waits) == 7
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(waits, CEILINGS, strict=True))
    assert [rounds.ceiling(n) for n in range(7)] == CEILINGS


# --- DynamoDB ----------------------------------------------------------------------------------------------------


def _sales(env: dict[str, str], count: int) -> tuple[Any, list[dict[str, str]]]:
    sales = table(env, "SALES_TABLE")
    keys = [{"connection_id": "mla-main", "sale_id": f"2000{n:08d}"} for n in range(count)]
    for key in keys:
        sales.put_item(Item={**key, "version": 1})
    return sales, keys


def test_batch_get_asks_unprocessed_keys_again_after_growing_waits(tables: dict[str, str]) -> None:
    sales, keys = _sales(tables, 30)
    rounds, waits = recording()
    with dynamodb_partial_batches() as partial:  # half of each call's keys come back unprocessed
        found = batch_get(sales, keys, rounds=rounds)
    assert sorted(row["sale_id"] for row in found) == [k["sale_id"] for k in keys]  # every key read, once
    assert partial.injected == 5  # 30 keys: 15, 8, 4, 2 and 1 read per call
    assert waits == CEILINGS[:4]  # a wait before each of the 4 re-asks, each twice the one before


def test_batch_get_raises_naming_the_keys_left_unread(tables: dict[str, str]) -> None:
    sales, keys = _sales(tables, 105)  # two calls' worth: 100 keys, then 5
    rounds, waits = recording(tries=3)
    with dynamodb_partial_batches(processed=10), pytest.raises(BatchReadIncomplete) as raised:
        batch_get(sales, keys, rounds=rounds)
    assert waits == CEILINGS[:2]
    assert [row["sale_id"] for row in raised.value.found] == [k["sale_id"] for k in keys[:30]]
    assert raised.value.keys == keys[30:]  # the 70 left unprocessed and the 5 never asked


def _items(count: int) -> list[dict[str, Any]]:
    return [{"job_id": "j1", "item_key": f"2000{n:08d}", "outcome": "pending"} for n in range(count)]


def _stored(jobs: Any) -> list[str]:
    return sorted(item["item_key"] for item in jobs.scan(ConsistentRead=True)["Items"])


def test_batch_write_writes_unprocessed_items_again_after_growing_waits(tables: dict[str, str]) -> None:
    jobs = table(tables, "JOBS_TABLE")
    items = _items(60)  # three calls' worth: 25, 25, 10
    rounds, waits = recording()
    with dynamodb_partial_batches() as partial:
        assert batch_write(jobs, puts=items, rounds=rounds) == 60
    assert _stored(jobs) == [i["item_key"] for i in items]
    # 25 requests take 5 calls (13, 6, 3, 2, 1 written), 10 take 4 (5, 3, 1, 1): the waits grow within each batch.
    assert partial.injected == 5 + 5 + 4
    assert waits == CEILINGS[:4] + CEILINGS[:4] + CEILINGS[:3]

    rounds, waits = recording()
    with dynamodb_partial_batches():
        keys = [{"job_id": i["job_id"], "item_key": i["item_key"]} for i in items]
        assert batch_write(jobs, deletes=keys, rounds=rounds) == 60
    assert _stored(jobs) == []
    assert waits == CEILINGS[:4] + CEILINGS[:4] + CEILINGS[:3]


def test_batch_write_raises_naming_the_items_left_unwritten(tables: dict[str, str]) -> None:
    jobs = table(tables, "JOBS_TABLE")
    items = _items(30)
    rounds, waits = recording(tries=3)
    with dynamodb_partial_batches(processed=1), pytest.raises(BatchWriteIncomplete) as raised:
        batch_write(jobs, puts=items, rounds=rounds)
    assert waits == CEILINGS[:2]
    assert isinstance(raised.value, StateWriteFailed)  # the caller fails (its message or task runs again)
    assert raised.value.written == 3
    assert _stored(jobs) == [i["item_key"] for i in items[:3]]
    assert raised.value.puts == items[3:]  # the 22 left unprocessed and the 5 never sent: nothing lost in silence
    assert raised.value.deletes == []


# --- SQS -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("sqs")
        yield client, client.create_queue(QueueName="bulk")["QueueUrl"]


def _messages(count: int) -> list[BulkMessage]:
    return [BulkMessage(job_id="j1", connection_id="mla-main", sale_ids=[f"2000{n:08d}"]) for n in range(count)]


def _queued(client: Any, url: str) -> list[str]:
    ids: list[str] = []
    while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        ids += [json.loads(m["Body"])["sale_ids"][0] for m in batch]
    return sorted(ids)


def test_failed_entries_are_sent_again_after_growing_waits(sqs: tuple[Any, str]) -> None:
    client, url = sqs
    messages = _messages(25)  # three calls' worth: 10, 10, 5
    rounds, waits = recording()
    with sqs_partial_batches() as partial:  # half of each call's entries fail on SQS's side
        assert SqsBulkQueue(client, url, rounds=rounds).send(messages) == 25
    assert _queued(client, url) == [m.sale_ids[0] for m in messages]  # each sent once
    # 10 entries take 4 calls (5, 3, 1, 1 sent), 5 take 3 (3, 1, 1).
    assert partial.injected == 4 + 4 + 3
    assert waits == CEILINGS[:3] + CEILINGS[:3] + CEILINGS[:2]


def test_entries_still_failing_after_the_last_round_raise_with_every_unsent_message(sqs: tuple[Any, str]) -> None:
    client, url = sqs
    messages = _messages(25)
    rounds, waits = recording(tries=3)
    with sqs_partial_batches(sent=0) as partial, pytest.raises(QueueSendError) as raised:
        SqsBulkQueue(client, url, rounds=rounds).send(messages)
    assert partial.injected == 3 and waits == CEILINGS[:2]
    assert raised.value.unsent == messages  # the 10 that failed and the 15 never tried
    assert _queued(client, url) == []


def test_an_entry_refused_for_the_senders_fault_is_not_sent_again(sqs: tuple[Any, str]) -> None:
    client, url = sqs
    messages = _messages(10)
    rounds, waits = recording()
    with sqs_partial_batches(sent=6, sender_fault=True) as partial, pytest.raises(QueueSendError) as raised:
        SqsBulkQueue(client, url, rounds=rounds).send(messages)
    assert partial.calls == 1 and waits == []  # sending the same entries again cannot help
    assert raised.value.unsent == messages[6:]
    assert _queued(client, url) == [m.sale_ids[0] for m in messages[:6]]
